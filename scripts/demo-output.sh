# What the demo prints of fleet's long outputs: sourced by demo.sh (and by the tests, which run
# these on long inputs).

# One host's entry of a saved plan, up to the next entry, at most 40 lines.
plan_host_entry() {  # PLAN_FILE HOST
  sed -n "/^    ~ machine\/$2  configure/,/^    [~+?!*^=o-] /p" "$1" | sed '$d' | head -40
}

# The first 24 outcomes of a saved apply, cut to 150 columns, how many there are, and its result.
apply_outcomes() {  # APPLY_FILE
  grep -E "^  [a-z]+/" "$1" | cut -c1-150 | head -24
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
  grep "^config " "$1" | head -3
  echo "... ($(grep -c "^config " "$1") configured hosts)"
}

# The audit trail, without each run's actions (stdin).
history_runs() {
  grep -v "^    machine/\|^    virtualmachine/\|^    sparkpool/\|^    cluster/"
}
