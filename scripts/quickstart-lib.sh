#!/usr/bin/env bash
# What the two checks of the README's first command share (scripts/quickstart-check.sh, in a
# scratch copy here; scripts/fresh-machine-check.sh, on a fresh Debian rootfs). Sourced.

# Copies into $2 what a clone of the repository at $1 would hold, with the working tree's
# edits: the tracked files and the untracked ones git doesn't ignore. Outside git,
# everything but target/ and .git/.
copy_checkout() {
  local root=$1 dest=$2
  if git -c safe.directory="$root" -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$root" && git -c safe.directory="$root" ls-files -z --cached --others --exclude-standard |
      tar --null --no-recursion --ignore-failed-read -T - -cf -) | tar -xf - -C "$dest"
  else
    tar -C "$root" --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$dest"
  fi
}

# Succeeds when file $1 (what scripts/quickstart.sh printed) holds the sample user's
# document as the two sample webhooks leave it; says what is missing otherwise.
expect_sample_document() {
  local expect
  for expect in '"clerkId": "user_2pZ6mQ3xYfTgHk8LwNcVbR1aS4d"' '"lastName": "King"' \
    '"email": "ada.lovelace@work.example"' '"isDeleted": false' '"syncStatus": "synced"'; do
    if ! grep -qF "$expect" "$1"; then
      cat "$1" >&2
      echo "the printed document lacks $expect" >&2
      return 1
    fi
  done
}
