#!/bin/sh
# The backend fork as a patch series against pristine upstream
# (third_party/compute-patches, git format-patch files).
#
#   third_party/forkpatches.sh check      pristine + patches == third_party/compute
#   third_party/forkpatches.sh generate   rewrite the series from this repository's history:
#                                         one patch per commit that changed third_party/compute
#
# The pristine module comes from the Go module proxy (go mod download). The
# check applies the series with git am in a scratch repository and compares
# the result with third_party/compute file by file; `make test` runs it, so
# a change to the fork lands with its patch. See FORK.md, "The patch series".
set -eu

UPSTREAM=github.com/gomlx/compute
VERSION=v0.1.14
root=$(cd "$(dirname "$0")/.." && pwd)
patches=$root/third_party/compute-patches
fork=$root/third_party/compute

pristine_dir() {
	dir=$(cd "$root" && GOFLAGS=-mod=mod go mod download -json "$UPSTREAM@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || { echo "forkpatches: cannot download $UPSTREAM@$VERSION" >&2; exit 1; }
	echo "$dir"
}

# scratch makes a git repository at $1 holding pristine upstream as its
# first commit.
scratch() {
	# The directory is checked here, not only inside pristine_dir: a
	# failure inside a command substitution does not stop the script, and
	# an empty name would copy "/.".
	src=$(pristine_dir) || exit 1
	[ -n "$src" ] && [ -d "$src" ] || exit 1
	mkdir -p "$1"
	cp -R "$src/." "$1/"
	chmod -R u+w "$1"
	git -C "$1" init -q
	git -C "$1" -c user.name=forkpatches -c user.email=forkpatches@l2gflow add -A
	git -C "$1" -c user.name=forkpatches -c user.email=forkpatches@l2gflow commit -q -m "$UPSTREAM $VERSION"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case "${1:-}" in
generate)
	scratch "$tmp/series"
	n=0
	for c in $(git -C "$root" log --reverse --format=%H -- third_party/compute); do
		n=$((n + 1))
		find "$tmp/series" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
		git -C "$root" archive "$c" third_party/compute | tar -x -C "$tmp/series" --strip-components=2
		git -C "$tmp/series" add -A
		if git -C "$tmp/series" diff --cached --quiet; then
			continue
		fi
		git -C "$tmp/series" -c user.name="$(git -C "$root" log -1 --format=%an "$c")" \
			-c user.email="$(git -C "$root" log -1 --format=%ae "$c")" \
			commit -q --date="$(git -C "$root" log -1 --format=%aI "$c")" \
			-m "$(git -C "$root" log -1 --format=%s "$c")" -m "l2gflow commit $c"
	done
	rm -rf "$patches"
	git -C "$tmp/series" format-patch -q --no-numbered --no-signature --zero-commit -o "$patches" HEAD~$(($(git -C "$tmp/series" rev-list --count HEAD) - 1))
	echo "forkpatches: $(ls "$patches" | wc -l) patches in third_party/compute-patches"
	;;
check)
	[ -d "$patches" ] || { echo "forkpatches: no third_party/compute-patches (run: $0 generate)" >&2; exit 1; }
	scratch "$tmp/series"
	git -C "$tmp/series" -c user.name=forkpatches -c user.email=forkpatches@l2gflow am -q "$patches"/*.patch
	rm -rf "$tmp/series/.git"
	if ! diff -r "$tmp/series" "$fork" >"$tmp/diff"; then
		echo "forkpatches: pristine $VERSION + third_party/compute-patches differs from third_party/compute:" >&2
		head -40 "$tmp/diff" >&2
		echo "(commit the fork change, then run: $0 generate)" >&2
		exit 1
	fi
	echo "forkpatches: pristine $UPSTREAM $VERSION + $(ls "$patches" | wc -l) patches == third_party/compute"
	;;
*)
	echo "usage: $0 check|generate" >&2
	exit 2
	;;
esac
