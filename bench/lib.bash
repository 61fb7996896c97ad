# Shared by the bench/*.sh scripts (sourced; not a benchmark itself). Needs $work.

# T CMD...: run CMD, leaving its wall and CPU seconds and peak RSS (KiB) in $wall $user $sys $rss.
T() { /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null; read -r wall user sys rss < "$work/time"; }

# layers_of LAYOUT: the layer blobs of an OCI layout's only image, in order.
layers_of() {
  local idx man
  idx=$1/index.json
  man=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "$idx")
  python3 -c 'import json,sys;[print(l["digest"].split(":")[1]) for l in json.load(open(sys.argv[1]))["layers"]]' "$1/blobs/sha256/$man" |
    sed "s#^#$1/blobs/sha256/#"
}
