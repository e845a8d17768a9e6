#!/usr/bin/env bash
# The whole story on this machine with the real engine: build signed bundles of a small app at
# v1, v2 and a broken v3; an approver adds a signature to v2; verify; refuse a tampered copy;
# import v1 (first install), write data, import v2 under a policy wanting builder AND approver
# (upgrade keeps the data), import v3 (fails its health check, rolled back, data exactly as
# before); bundle status.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${DEMO_DIR:-/tmp/bundle-demo}
export BUNDLE_STATE_DIR=$work/state BUNDLE_KEYS=$work/keys GNUPGHOME=$work/gnupg
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
tree_digest() { docker exec demo sh -c 'cd /data && find . -type f | sort | xargs sha256sum' | sha256sum | cut -c1-16; }

say "Clean slate: $work, container 'demo', volume 'demo-data'"
docker rm -f demo demo.previous >/dev/null 2>&1 || true
docker ps -aq --filter name='^/demo\.' | xargs -r docker rm -f >/dev/null
docker volume rm demo-data >/dev/null 2>&1 || true
docker rmi demo/app:1.0.0 demo/app:2.0.0 demo/app:3.0.0 >/dev/null 2>&1 || true  # a previous run's images
stop_agents() { for h in gnupg gnupg-approver checker; do gpgconf --homedir "$work/$h" --kill all 2>/dev/null || true; done; }
stop_agents  # a previous run's gpg-agents
rm -rf "$work" && mkdir -p "$work/keys" "$work/keys-approved" && mkdir -m 700 "$work/gnupg" "$work/gnupg-approver"
trap stop_agents EXIT

say "Internet side: a builder key, three releases of the app (v3 has a bad migration)"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key 'Demo Builder <builder@example.test>' ed25519 sign never
fpr=$(gpg --list-keys --with-colons 2>/dev/null | awk -F: '/^fpr/{print $10; exit}')
gpg --armor --export "$fpr" > "$work/keys/builder.asc"
echo "builder key $fpr (its public half is the intranet's trust store: $work/keys)"
for v in 1 2 3; do
    "$here/examples/demo/build-app.sh" "demo/app:$v.0.0" "$v.0.0" $([ $v = 3 ] && echo broken)
    sed -e "s/1\.0\.0/$v.0.0/g" -e "s/^sequence = 1/sequence = $v/" "$here/examples/demo/bundle.toml" > "$work/v$v.toml"
    bundle build "$work/v$v.toml" -o "$work/demo-$v.0.0.bundle.zst" --sign-key "$fpr" --local
done

say "Internet side: an approver (own key, own keyring) checks v2 completely, then adds a signature"
GNUPGHOME=$work/gnupg-approver gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key 'Demo Approver <approver@example.test>' ed25519 sign never
afpr=$(GNUPGHOME=$work/gnupg-approver gpg --list-keys --with-colons 2>/dev/null | awk -F: '/^fpr/{print $10; exit}')
cp "$work/keys/builder.asc" "$work/keys-approved/"
GNUPGHOME=$work/gnupg-approver gpg --armor --export "$afpr" > "$work/keys-approved/approver.asc"
printf '[roles.builder]\nkeys = ["%s"]\n\n[roles.approver]\nkeys = ["%s"]\n' "$fpr" "$afpr" > "$work/keys-approved/policy.toml"
echo "approver key $afpr; intranet trust store for v2: $work/keys-approved (policy: one builder AND one approver)"
if bundle verify "$work/demo-2.0.0.bundle.zst" --keys "$work/keys-approved"; then echo "BUG: unapproved v2 accepted"; exit 1
else echo "(exit $?: refused, the builder's signature alone does not meet the policy)"; fi
bundle approve "$work/demo-2.0.0.bundle.zst" --sign-key "$afpr" --gnupghome "$work/gnupg-approver" --keys "$work/keys"

say "Anyone can check a bundle with zstd, tar, gpg and sha256sum (v2: both signatures)"
(cd "$work" && sha256sum -c demo-2.0.0.bundle.zst.sha256)
mkdir -m 700 "$work/checker" && gpg --homedir "$work/checker" --quiet --import "$work/keys-approved/"*.asc
mkdir -p "$work/unpacked" && (cd "$work/unpacked" && zstd -qdc ../demo-2.0.0.bundle.zst | tar -x \
    && gpg --homedir "$work/checker" --verify SHA256SUMS.asc SHA256SUMS 2>&1 | grep -E '^gpg: Good' \
    && sha256sum -c --quiet SHA256SUMS && echo "SHA256SUMS: all OK")

say "The crossing: the intranet engine has none of these images"
docker rmi demo/app:1.0.0 demo/app:2.0.0 demo/app:3.0.0 >/dev/null
bundle inspect "$work/demo-2.0.0.bundle.zst"

say "Intranet: verify v2 (builder and approver signed), then a copy with one byte changed is refused"
bundle verify "$work/demo-2.0.0.bundle.zst" --keys "$work/keys-approved"
cp "$work/demo-2.0.0.bundle.zst" "$work/tampered.bundle.zst"
size=$(stat -c %s "$work/tampered.bundle.zst")
printf '\x42' | dd of="$work/tampered.bundle.zst" bs=1 seek=$((size / 2)) conv=notrunc status=none
if bundle import "$work/tampered.bundle.zst" --yes; then echo "BUG: tampered bundle accepted"; exit 1; else echo "(exit $?: refused, nothing changed)"; fi

say "Import v1: first install"
bundle import "$work/demo-1.0.0.bundle.zst" --yes
docker exec demo sh -c 'echo "precious user data" > /data/important.txt; echo "notes v1" > /data/notes.txt'
echo "app answers: version $(wget -qO- http://127.0.0.1:18080/version 2>/dev/null || curl -s http://127.0.0.1:18080/version)"

say "Import v2 under the builder+approver policy: upgrade, data kept"
bundle import "$work/demo-2.0.0.bundle.zst" --keys "$work/keys-approved" --yes
echo "app answers: version $(curl -s http://127.0.0.1:18080/version); /data/important.txt: $(docker exec demo cat /data/important.txt)"
before=$(tree_digest)
echo "digest of the data volume: $before"

say "Import v3: its migration rewrites and deletes data, then crashes -> automatic rollback"
set +e
bundle import "$work/demo-3.0.0.bundle.zst" --yes
rc=$?
set -e
echo "(exit $rc: 4 means the update failed and the previous version is running)"
after=$(tree_digest)
echo "app answers: version $(curl -s http://127.0.0.1:18080/version); digest of the data volume: $after"
[ "$rc" = 4 ] && [ "$before" = "$after" ] && echo "data exactly as before the failed update"

say "bundle status"
bundle status demo
