# What the demo prints of fleet's long outputs: sourced by demo.sh (and by the tests, which run
# these on long inputs).
#
# The demo runs under `set -o pipefail`, so no pipe here ends in a reader that quits early (head,
# grep -q, grep -m): the writer before it would die of SIGPIPE and fail the demo, depending on timing.

# The first N lines of stdin, like `head -n N`, but reading all of it.
first_lines() {  # N
  sed -n "1,${1}p"
}

# One host's entry of a saved plan, up to the next entry, at most 40 lines.
plan_host_entry() {  # PLAN_FILE HOST
  sed -n "/^    ~ machine\/$2  configure/,/^    [~+?!*^=o-] /p" "$1" | sed '$d' | first_lines 40
}

# The first 24 outcomes of a saved apply, cut to 150 columns, how many there are, and its result.
apply_outcomes() {  # APPLY_FILE
  grep -E "^  [a-z]+/" "$1" | cut -c1-150 | first_lines 24
  echo "  ... ($(grep -cE "^  [a-z]+/" "$1") actions)"
  grep -E "^Run " "$1"
}

# An apply's outcomes and its result, cut to 200 columns (stdin).
apply_result() {
  grep -E "^  [a-z]+/|^Run " | cut -c1-200
}

# A saved drift report: every finding, then the first 3 hosts' configuration coverage and how many
# hosts there are.
drift_summary() {  # DRIFT_FILE
  grep -v "^config " "$1"
  grep "^config " "$1" | first_lines 3
  echo "... ($(grep -c "^config " "$1") configured hosts)"
}

