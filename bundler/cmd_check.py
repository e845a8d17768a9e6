"""`bundle check`: parse options, call bundler.watch."""

import os
from pathlib import Path

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from bundlecore.timeutil import parse_duration
from bundler.upstream import DEFAULT_API_URL, DEFAULT_TIMEOUT, GitHubReleases
from bundler.watch import BuildRequest, CheckOptions, check_and_notify, run_every


def _duration(ctx, param, value):
    try:
        return None if value is None else parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command()
@click.argument("spec", type=click.Path(path_type=Path), default="bundle.toml")
@jsondoc.json_option
@click.option("--build", "do_build", is_flag=True, help="Build the bundle of a newer release (needs --sign-key).")
@click.option("--sign-key", help="Fingerprint of the builder's signing key (with --build).")
@click.option("--gnupghome", envvar="GNUPGHOME", help="Keyring holding the signing key (default $GNUPGHOME).")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where --build writes NAME-VERSION.bundle.zst (default: next to the spec).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep NAME.check.json here (default: SPEC's name with .check.json, next to it).")
@click.option("--prereleases", is_flag=True, help="Count pre-releases (also [upstream] prereleases = true).")
@click.option("--drafts", is_flag=True, help="Count drafts (also [upstream] drafts = true; needs a token).")
@click.option("--api-url", default=DEFAULT_API_URL, show_default=True, help="GitHub API (Enterprise: https://HOST/api/v3).")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds for each HTTP request's whole answer (a total deadline, not a socket timeout).")
@click.option("--notify", "notify_url", metavar="URL", help="POST a JSON event here when a newer release exists.")
@click.option("--interval", callback=_duration, metavar="DURATION",
              help="Check again every DURATION (e.g. 24h) until SIGTERM.")
def check(spec, as_json, do_build, sign_key, gnupghome, output_dir, state_dir, prereleases, drafts, api_url,
          timeout, notify_url, interval):
    """Ask upstream's GitHub Releases for a newer version (exit 10), optionally build and announce it."""
    if do_build and not sign_key:
        raise click.UsageError("--build needs --sign-key")
    if interval is not None and interval < 1:
        raise click.BadParameter("must be at least 1s", param_hint="--interval")
    opts = CheckOptions(
        github=GitHubReleases(api_url=api_url, token=os.environ.get("GITHUB_TOKEN") or None, timeout=timeout),
        state_dir=state_dir, prereleases=prereleases, drafts=drafts, notify_url=notify_url,
        build=BuildRequest(sign_key, gnupghome, output_dir) if do_build else None)

    def once() -> int:
        report = check_and_notify(spec, opts)
        emit(jsondoc.document("check", report.summary(), report.exit_code), as_json, report.lines())
        return report.exit_code

    return run_every(interval, once) if interval else once()
