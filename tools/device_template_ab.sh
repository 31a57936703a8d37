#!/usr/bin/env bash
# A/B of a template change on one GPU host, alternating the variants so that the machine's drift
# falls on both alike: runs a timing script once per pass, first with the tree's template ("new"),
# then with OLD put in its place ("old"), PASSES times; each variant keeps its own kernel cache (built
# on its first pass). The tree's template is restored at the end.
#   bash tools/device_template_ab.sh OUT TEMPLATE OLD PASSES SCRIPT [ARGS...]
# e.g. bash tools/device_template_ab.sh OUT templates/fmha/fmha.cu.j2 old.cu.j2 2 \
#        tools/device_fmha_paged.py --prefill-only --jobs 16
# The script is called with --cache-dir CACHE --out OUT/<variant>_<pass> after ARGS.
set -u
out=$1; template=$2; old=$3; passes=$4; script=$5; shift 5
mkdir -p "$out"
cp "$template" "$out/.new_template"
trap 'cp "$out/.new_template" "$template"; rm -f "$out/.new_template"' EXIT
for pass in $(seq 1 "$passes"); do
  for variant in new old; do
    if [ "$variant" = new ]; then cp "$out/.new_template" "$template"; else cp "$old" "$template"; fi
    start=$(date +%s)
    python3 "$script" "$@" --cache-dir "/tmp/aotc-ab-$variant" --out "$out/${variant}_$pass" \
      > "$out/${variant}_$pass.log" 2>&1
    echo "$variant pass $pass: exit $? in $(( $(date +%s) - start )) s"; tail -n 2 "$out/${variant}_$pass.log"
  done
done
