#!/bin/bash
# build-kube-apiserver.sh WORKDIR -> WORKDIR/bin/kube-apiserver (Kubernetes v1.20.2), from Debian's
# `kubernetes` source package with Debian's Go, offline (tests/run.sh runs it once). The v1.20
# tree needs two repairs to build with Go 1.19 (steps 2 and 3), and GOPATH mode: module mode
# fails with `updates to go.mod needed`.
set -euo pipefail
W=${1:?usage: build-kube-apiserver.sh WORKDIR}; mkdir -p "$W/aptsrc/lists/partial" "$W/bin" "$W/gopath/src/k8s.io"
command -v go >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends golang-go
# 1. fetch the source with a private deb-src list (does not touch /etc/apt)
# deb-src entries: the machine's own apt sources (deb822 files), with the type switched to deb-src
mkdir -p "$W/aptsrc/sources.d"
for f in /etc/apt/sources.list.d/*.sources; do sed 's/^Types: deb$/Types: deb-src/' "$f" > "$W/aptsrc/sources.d/$(basename "$f")"; done
APTOPTS=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$W/aptsrc/sources.d" -o Dir::State::Lists="$W/aptsrc/lists")
apt-get "${APTOPTS[@]}" update -qq
(cd "$W/aptsrc" && apt-get "${APTOPTS[@]}" source --download-only kubernetes >/dev/null 2>&1)
SRC="$W/aptsrc/kubernetes-1.20.2"
[ -d "$SRC" ] || tar xzf "$W"/aptsrc/kubernetes_1.20.5+really1.20.2.orig.tar.gz -C "$W/aptsrc"
ln -sfn "$SRC" "$W/gopath/src/k8s.io/kubernetes"
export GOPATH="$W/gopath" GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOCACHE="${GOCACHE:-$W/gocache}"
cd "$GOPATH/src/k8s.io/kubernetes"
# 2. patch vendored modern-go/reflect2 v1.0.1 for Go >= 1.18 (same fix as reflect2 v1.0.2)
R=vendor/github.com/modern-go/reflect2
if ! grep -q 'm unsafe.Pointer, it \*hiter)' $R/unsafe_link.go; then
python3 - "$R" <<'EOF'
import sys; d=sys.argv[1]
p=d+'/unsafe_link.go'; s=open(p).read()
s=s.replace("func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter","func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)")
old=s[s.index("type hiter struct {"):]; old=old[:old.index("}")+1]
s=s.replace(old,"""type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}""")
open(p,'w').write(s)
p=d+'/unsafe_map.go'; s=open(p).read()
s=s.replace("""	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),""","""	var it hiter
	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
	return &UnsafeMapIterator{
		hiter:      &it,""")
open(p,'w').write(s)
EOF
fi
# 3. generate pkg/generated/openapi/zz_generated.openapi.go (same package selection as build/root/Makefile.generated_files)
if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
  go build -o "$W/bin/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
  INPUTS=$(find . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune -o -type f -name '*.go' -print \
    | xargs grep -l '^// *+k8s:' | xargs grep -l '+k8s:openapi-gen=' | sed 's|/[^/]*$||; s|^\./||; s|^staging/src|vendor|' \
    | LC_ALL=C sort -u | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  "$W/bin/openapi-gen" --logtostderr -i "$INPUTS" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$W/openapi-violations.report"
fi
# 4. build; stamp the version like hack/lib/version.sh (otherwise /version says v0.0.0-master+faecb196815e2)
LDF="-s -w"
for V in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $V.gitVersion=v1.20.2 -X $V.gitMajor=1 -X $V.gitMinor=20 -X $V.gitTreeState=clean -X $V.buildDate=2021-01-13T00:00:00Z"
done
go build -ldflags "$LDF" -o "$W/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
"$W/bin/kube-apiserver" --version     # Kubernetes v1.20.2
