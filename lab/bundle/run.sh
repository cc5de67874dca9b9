#!/bin/sh
# The MTE KVM suite on this device, from its prebuilt bundle: the static aarch64 runner is the
# VMM on the device's own KVM (the suite's host lane). Needs only a POSIX shell (busybox sh is
# enough), /dev/kvm and an arm64 kernel with MTE; root lets the runner read the kernel's log.
#
#   run.sh [run|bench|list] [--out DIR] [--shard K/N] [-- HARNESS ARGS]
#   run.sh lava DIR         the verdicts of DIR as lava-test-case lines, a test set for its kernel
#
# A run writes DIR (default ./mte-run-<UTC time>): `records` (the runner's record stream, as
# `cargo xtask run` reads it from a runner), `exit-status`, `command`, `suite-version` and
# `device/` (the files of /proc and /sys that name the machine). On any machine with the
# suite's checkout, `cargo xtask import DIR` turns it into a run directory (results.jsonl,
# run.json, the kernel's log, results.tap, junit.xml, the report) that `report`, `compare` and
# `baseline` read. Exit status: the runner's (0 clean, 101 a check failed), 2 on a usage error.

here=$(cd "$(dirname "$0")" && pwd)

usage() {
    sed -n '7,8s/^#   //p' "$here/run.sh"
}

# lava-test-case lines from a record stream: one case a verdict, names cut to LAVA's
# characters and to 99 of them; an xfail (documented older behaviour) passes, a fault-injection
# proof of an xfail proved nothing and skips.
lava_lines() {
    awk '
    /@@mte [0-9a-f]+ \{"record":"verdict"/ {
        if (!match($0, /"test":"[^"]*"/)) next
        name = substr($0, RSTART + 8, RLENGTH - 9)
        if (!match($0, /"outcome":"[a-z]*"/)) next
        outcome = substr($0, RSTART + 11, RLENGTH - 12)
        if (outcome == "xfail") outcome = (name ~ /^fault_injection::/) ? "skip" : "pass"
        gsub(/::/, ".", name)
        gsub(/[^A-Za-z0-9._-]+/, "_", name)
        if (length(name) > 99) name = substr(name, 1, 90) "." substr(name, length(name) - 7)
        print "lava-test-case " name " --result " outcome
    }' "$1"
}

mode=run
case "${1:-}" in
run | bench | list) mode=$1; shift ;;
lava)
    [ -r "${2:-}/records" ] || { echo "run.sh lava: ${2:-(no DIR)}/records is missing" >&2; exit 2; }
    release=$(cat "$2/device/proc/sys/kernel/osrelease" 2>/dev/null || echo unknown)
    echo "lava-test-set start host-$(echo "$release" | tr -c 'A-Za-z0-9._\n-' _)"
    lava_lines "$2/records"
    if ! grep -q '"record":"done"' "$2/records"; then echo "lava-test-case run --result fail"; fi
    echo "lava-test-set stop"
    exit 0
    ;;
esac
out=
shard=
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out=${2:?--out takes a directory}; shift 2 ;;
    --shard) shard=${2:?--shard takes K/N}; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (harness arguments go after --)" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$out" ] || out=mte-run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out/device" || exit 2

# What names the machine, read on the host side as the host lane reads its own machine.
for file in /proc/cpuinfo /proc/sys/kernel/osrelease /proc/sys/kernel/version \
    /proc/sys/kernel/hostname /sys/devices/system/cpu/cpu0/regs/identification/midr_el1 \
    /sys/firmware/devicetree/base/model /sys/class/dmi/id/sys_vendor \
    /sys/class/dmi/id/product_name; do
    if [ -r "$file" ]; then
        mkdir -p "$out/device${file%/*}" && cat "$file" >"$out/device$file" 2>/dev/null
    fi
done
if [ -e /dev/kvm ]; then mkdir -p "$out/device/dev" && : >"$out/device/dev/kvm"; fi
uname -m >"$out/device/arch"
cp "$here/VERSION" "$out/suite-version"

case $mode in
bench) set -- --bench "$@" ;;
list) set -- --list "$@" ;;
esac
if [ -n "$shard" ]; then set -- --shard "$shard" "$@"; fi
set -- --lane host --payload-dir "$here" "$@"
echo "$here/mte-runner $*" >"$out/command"
cd "$out" || exit 2

# The records go to the file and on to this shell's output (a lab's log, a console), as the
# runner writes them.
{
    "$here/mte-runner" "$@" 2>&1
    echo $? >exit-status
} | tee records
status=$(cat exit-status 2>/dev/null || echo 2)
echo "mte-suite: the runner exited with $status; records in $(pwd)"
exit "$status"
