# OCI image layouts from plain tars, in shell: what examples/*/mkimages.sh share (sourced, not run).
# The caller sets $out (the folder of layouts), $work (a scratch folder) and SOURCE_DATE_EPOCH.

# blob FILE MEDIATYPE: store FILE in the layout by digest, print a descriptor.
blob() {
  local file=$1 mt=$2 d s
  d=$(sha256sum "$file" | cut -d' ' -f1)
  s=$(stat -c %s "$file")
  mkdir -p "$layout/blobs/sha256"
  cp "$file" "$layout/blobs/sha256/$d"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$mt" "$d" "$s"
}

# image NAME LAYER.tar...: an OCI layout images/NAME with one image tagged v1, uncompressed layers.
image() {
  local name=$1; shift
  layout="$out/$name"
  rm -rf "$layout"
  mkdir -p "$layout"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
  local layers="" diffs="" t
  for t in "$@"; do
    layers="${layers:+$layers,}$(blob "$t" application/vnd.oci.image.layer.v1.tar)"
    diffs="${diffs:+$diffs,}\"sha256:$(sha256sum "$t" | cut -d' ' -f1)\""
  done
  local created
  created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
  printf '{"created":"%s","architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$created" "$diffs" > "$work/config.json"
  local cfg man
  cfg=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$cfg" "$layers" > "$work/manifest.json"
  man=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
  printf '{"schemaVersion":2,"manifests":[%s]}' \
    "${man%\}},\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}}" > "$layout/index.json"
  echo "made $layout ($(du -sh "$layout" | cut -f1))" >&2
}
