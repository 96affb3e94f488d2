#!/bin/sh
# Prepares the folder of a small directory network: an authority, three mixes (one a
# layer) and a provider, each with its keys and node.toml, and two clients (alice, bob),
# registered, plus one script a process (run/<name>.sh) that starts each of them. The
# compose file runs it once in its `prepare` service and then each script in its own
# container; the same scripts run as plain processes on a loopback subnet in the tests.
#
#   prepare.sh OUT
#
# NET (default 10.89.0, the compose network) is the /24 the addresses are taken from:
# NET.1-3 the mixes, NET.100 the provider, NET.250 the authority. LOOPIX_BIN is the
# binary (default: loopix on the PATH) and LOOPIX_ENTRYPOINT what the scripts run
# (default: the image's loopix-entrypoint). A folder prepared before is kept as it is.
set -eu
OUT=${1:?usage: prepare.sh OUT}
NET=${NET:-10.89.0}
LOOPIX=${LOOPIX_BIN:-loopix}
ENTRY=${LOOPIX_ENTRYPOINT:-/usr/local/bin/loopix-entrypoint}
[ -f "$OUT/prepared" ] && exit 0
mkdir -p "$OUT/run"
AUTH=$NET.250:8000

"$LOOPIX" directory init --dir "$OUT/authority" > "$OUT/authority.txt"
AUTHORITY_KEY=$(sed -n 's/^authority key: //p' "$OUT/authority.txt")
printf '#!/bin/sh\nexec "%s" directory serve --dir "%s/authority" --listen "%s"\n' \
  "$ENTRY" "$OUT" "$AUTH" > "$OUT/run/authority.sh"

for node in 1:mix:1 2:mix:2 3:mix:3 100:provider:; do
  id=${node%%:*} rest=${node#*:}
  role=${rest%%:*} layer=${rest#*:}
  ip=$NET.$id
  mkdir -p "$OUT/node-$id"
  "$LOOPIX" keygen --epochs 72 --out "$OUT/node-$id/node.key" > "$OUT/node-$id/keys.txt"
  identity=$(sed -n 's/^# identity_key = "\([0-9a-f]*\)".*/\1/p' "$OUT/node-$id/keys.txt")
  "$LOOPIX" directory register-node --dir "$OUT/authority" --id "$id" --role "$role" \
    ${layer:+--layer "$layer"} --address "$ip:9000" --identity-key "$identity"
  store=
  [ "$role" = provider ] && store='inbox_path = "inbox.redb"'
  cat > "$OUT/node-$id/node.toml" <<TOML
id = $id
key_file = "node.key"
metrics = "$ip:9100"
$store

[limits]
# Small, for a whole network on one machine; leave both out on a dedicated host.
pool_packets = 16384
max_packets_per_s = 2000

[directory]
authorities = [{ address = "$AUTH", key = "$AUTHORITY_KEY" }]
TOML
  printf '#!/bin/sh\nexec "%s" node --config "%s/node-%s/node.toml"\n' \
    "$ENTRY" "$OUT" "$id" > "$OUT/run/node-$id.sh"
done

for who in alice:10000 bob:10001; do
  name=${who%:*} id=${who#*:}
  "$LOOPIX" keygen --out "$OUT/$name.key" > "$OUT/$name.txt"
  "$LOOPIX" directory register-client --dir "$OUT/authority" --id "$id" --provider 100 \
    --public-key "$(sed -n 's/^public_key = "\(.*\)"$/\1/p' "$OUT/$name.txt")" \
    --session-key "$(sed -n 's/^session_key = "\(.*\)"$/\1/p' "$OUT/$name.txt")"
done
client="\"$ENTRY\" client --authority \"$AUTHORITY_KEY@$AUTH\""
printf '#!/bin/sh\nexec %s --id 10001 --key "%s/bob.key" --until-received 1 --duration-s 300 --json\n' \
  "$client" "$OUT" > "$OUT/run/bob.sh"
printf '#!/bin/sh\nexec %s --id 10000 --key "%s/alice.key" --send-to 10001 --message "hello from a container" --until-acked --duration-s 300\n' \
  "$client" "$OUT" > "$OUT/run/alice.sh"
chmod +x "$OUT"/run/*.sh
touch "$OUT/prepared"
