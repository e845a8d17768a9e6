"""Version ordering, tag -> image mapping, which releases count, and the spec of a new release."""

import itertools

import pytest

from bundlecore.errors import UsageProblem
from bundler.spec import BuildSpec, Upstream, load_spec
from bundler.upstream import NotAVersion, Release, _reset_text, image_for_tag, newest, parse_version
from bundler.watch import spec_for_release

ASCENDING = ["0.9", "v1.9.0", "1.9.1", "1.10.0-alpha", "1.10.0-alpha.1", "1.10.0-alpha.beta", "1.10.0-beta.2",
             "1.10.0-beta.11", "1.10.0-rc.1", "v1.10.0", "1.10.1", "1.11.0", "2.0.0-rc.1", "2.0.0", "10.0.0"]


@pytest.mark.parametrize("low,high", list(itertools.pairwise(ASCENDING)))
def test_versions_order_as_versions_not_strings(low, high):
    assert parse_version(low) < parse_version(high)
    assert not parse_version(high) < parse_version(low)


def test_sorting_a_shuffled_list_gives_version_order():
    shuffled = ASCENDING[::2] + ASCENDING[1::2]
    assert sorted(shuffled, key=parse_version) == ASCENDING


@pytest.mark.parametrize("a,b", [("1.10", "1.10.0"), ("v1.2.3", "1.2.3"), ("V2", "2.0.0"),
                                 ("1.2.3+build.5", "1.2.3"), ("1.10.0rc1", "1.10.0-rc1")])
def test_equal_versions(a, b):
    assert parse_version(a) == parse_version(b)


@pytest.mark.parametrize("tag,text,pre", [("v1.10.0", "1.10.0", False), ("1.10.0-rc.1", "1.10.0-rc.1", True),
                                          ("v2.0.0-beta", "2.0.0-beta", True), ("3", "3", False)])
def test_v_prefix_is_not_part_of_the_version(tag, text, pre):
    v = parse_version(tag)
    assert v.text == text and str(v) == text and v.is_prerelease is pre


@pytest.mark.parametrize("tag", ["", "v", "latest", "nightly", "v1..2", "1.2.3 ", " 1.2.3", "1.2.3/../x",
                                 "1.2.3\x1b[2J", "1.2.3;rm", "vv1.2", "1.2.3-", "1." + "1" * 200, None, 123])
def test_what_is_not_a_version_is_refused(tag):
    with pytest.raises(NotAVersion):
        parse_version(tag)


@pytest.mark.parametrize("template,tag,ref", [
    ("mintplexlabs/anythingllm:{version}", "v1.9.0", "mintplexlabs/anythingllm:1.9.0"),
    ("mintplexlabs/anythingllm:{version}", "1.10.0-rc.1", "mintplexlabs/anythingllm:1.10.0-rc.1"),
    ("127.0.0.1:5000/team/app:{version}", "v2.0.0", "127.0.0.1:5000/team/app:2.0.0"),
    ("example/app:v{version}-alpine", "v1.2.3", "example/app:v1.2.3-alpine"),
])
def test_tag_maps_to_image_with_the_v_stripped(template, tag, ref):
    assert image_for_tag(template, tag) == ref


@pytest.mark.parametrize("tag", ["1.2.3+build.1", "release-1", "v1.2/../../x"])
def test_tag_that_cannot_be_an_image_tag_is_refused(tag):
    with pytest.raises(NotAVersion):
        image_for_tag("example/app:{version}", tag)


def api(tag, draft=False, prerelease=False):
    return {"tag_name": tag, "name": tag, "draft": draft, "prerelease": prerelease,
            "published_at": "2026-01-01T00:00:00Z", "html_url": f"https://github.com/o/r/releases/tag/{tag}",
            "assets": [], "body": "x" * 2000}


LISTING = [api("v3.0.0", draft=True), api("v2.1.0-rc.1", prerelease=True), api("v1.9.0"), api("v1.10.0"),
           api("weekly-build"), api("v1.2.0")]


@pytest.mark.parametrize("pre,drafts,expected", [(False, False, "1.10.0"), (True, False, "2.1.0-rc.1"),
                                                 (False, True, "3.0.0"), (True, True, "3.0.0")])
def test_newest_counts_drafts_and_prereleases_only_when_asked(pre, drafts, expected):
    assert newest(LISTING, pre, drafts).version.text == expected


def test_newest_of_nothing_that_counts_is_none_and_notes_are_an_excerpt():
    assert newest([api("weekly"), api("v9.0.0", draft=True)], False, False) is None
    assert len(Release.from_api(api("v1.0.0")).notes) == 500


def test_rate_limit_reset_text():
    assert _reset_text({"X-RateLimit-Reset": "1767225600"}).startswith("it resets at 2026-01-01T00:00:00Z")
    assert _reset_text({"Retry-After": "60"}) == "retry after 60s"
    assert _reset_text({}) == "GitHub did not say when it resets"


@pytest.mark.parametrize("reset", ["999999999999", "9" * 40, "-5", "1e9", "\u00b2", "\u0663\u0663", " 60"])
def test_an_absurd_rate_limit_reset_says_nothing_rather_than_failing(reset):
    assert _reset_text({"X-RateLimit-Reset": reset}) == "GitHub did not say when it resets"


HOSTILE_TAGS = ["v1.10.0/../../../etc/cron.d/x", "../1.10.0", "1.10.0;touch /tmp/pwned", "1.10.0$(id)",
                "1.10.0`id`", "1.10.0|sh", "1.10.0&&x", "1.10.0\nup to date", "1.10.0 ", "1.10.0>x", "1.10.0'",
                "1.10.0\"", "1.10.0\\x", "1.10.0:latest", "1.10.0@sha256:00", "1.10.0\x00", "\u0661.0.0",
                "1.10.0-\u00e9"]


@pytest.mark.parametrize("tag", HOSTILE_TAGS)
def test_a_hostile_tag_never_becomes_an_image_ref_or_a_file_name(tag):
    with pytest.raises(NotAVersion):
        image_for_tag("example/app:{version}", tag)
    with pytest.raises(NotAVersion):  # it is not even a release
        Release.from_api(api(tag))


def spec(images, target_image, sequence=7, template="example/app:{version}"):
    return BuildSpec(name="app", version="1.9.0", sequence=sequence, expires_seconds=86400, platform=None,
                     images=images, target={"kind": "container", "name": "app", "image": target_image, "run": {}},
                     upstream=Upstream(github="o/r", image=template))


def test_spec_for_release_retags_only_the_upstream_repository():
    old = spec(["example/app:1.9.0", "redis:7.2.4"], "example/app:1.9.0")
    new = spec_for_release(old, Release.from_api(api("v1.10.0")), last_sequence=12)
    assert new.version == "1.10.0" and new.sequence == 13
    assert new.images == ["example/app:1.10.0", "redis:7.2.4"] and new.target["image"] == "example/app:1.10.0"
    assert old.images == ["example/app:1.9.0", "redis:7.2.4"] and old.target["image"] == "example/app:1.9.0"
    assert spec_for_release(old, Release.from_api(api("v1.10.0")), last_sequence=None).sequence is None


SPEC = """name = "app"
version = "1.9.0"
images = ["example/app:1.9.0"]
[target]
kind = "container"
name = "app"
image = "example/app:1.9.0"
[upstream]
github = "{github}"
image = "{image}"
"""


@pytest.mark.parametrize("github,image,error", [
    ("o/r", "other/app:{version}", "names no repository of images"),
    ("o/r", "example/app:1.9.0", "upstream.image"),  # no {version}
    ("o/r", "example/app", "upstream.image"),
    ("not a repo", "example/app:{version}", "upstream.github"),
])
def test_spec_upstream_table_is_checked(tmp_path, github, image, error):
    path = tmp_path / "bundle.toml"
    path.write_text(SPEC.format(github=github, image=image))
    with pytest.raises(UsageProblem, match=error):
        load_spec(path)


