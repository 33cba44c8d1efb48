#!/usr/bin/env bash
# Option parsing like Kaldi's utils/parse_options.sh, shared by asr.sh and the recipes' scripts. Source it after the
# option defaults, before any `cd`:
#
#   stage=1              # first stage to run        <- an option: `name=default  # what`, before the source line
#   passthrough=()       # optional: collect options this script does not know, to hand them on ...
#   _help_driver=PATH    # ... to this script (asr.sh): --help also lists its options not listed here
#   . "$(dirname "$0")/../../TEMPLATE/asr1/parse_options.sh"
#
# `--name value` or `--name=value` sets the shell variable `name` (dashes become underscores) if the script declared
# it. An undeclared name is an error, unless the script declared the array `passthrough`: then the option and its
# value are appended to it. --help prints the header comment of the script that was run, then each option once:
# the `name=default` lines before the line sourcing this file in the script that sources it (values computed with
# $(...), arrays and names starting with `_` are not options), with their comments.

# The `name=default  # what` lines of an options block (up to the line sourcing this file), each name once, as
# `  --name=default  # what` with the comment lines continuing it; names in $2 (space-separated) left out.
_options_list() {
    awk -v skip=" ${2:-} " '/^[[:space:]]*(\.|source)[[:space:]].*parse_options\.sh/ { exit }
         /^ *(--)?[a-z][a-z0-9_]*=/ {
             line = $0; indent = sub(/^ *--/, "", line) ? "" : "    "  # a --help listing is indented already
             name = substr(line, 1, index(line, "=") - 1); value = substr(line, length(name) + 2)
             listed = !(name in seen) && value !~ /^(\$\(|\()/ && index(skip, " " name " ") == 0
             seen[name] = 1
             if (listed) print "  --" line
             next
         }
         listed && /^[[:space:]]+#/ { print indent $0; next }
         { listed = 0 }' "$1"
}

_options_help() {
    local script="${BASH_SOURCE[2]:-$0}"  # the file that sourced this one (a run.sh may source a shared body)
    local own
    sed -n '2,/^[^#]/{/^#/!q; s/^# \{0,1\}//; p}' "$0"
    echo "Options (--name value or --name=value; defaults after '='):"
    own=$(_options_list "${script}")
    echo "${own}"
    if [ -n "${_help_driver:-}" ]; then
        echo "Options handed on to ${_help_driver##*/}:"
        "${_help_driver}" --help 2>&1 | sed '1,/^Options/d' \
            | _options_list /dev/stdin "$(echo "${own}" | sed -n 's/^  --\([a-z0-9_]*\)=.*/\1/p' | tr '\n' ' ')"
    fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h) _options_help >&2; exit 0 ;;
        --*=*) _name="${1%%=*}"; _value="${1#*=}"; _given=("$1"); shift ;;
        --*) [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
             _name="$1"; _value="$2"; _given=("$1" "$2"); shift 2 ;;
        *) echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 1 ;;
    esac
    _name="${_name#--}"; _name="${_name//-/_}"
    if declare -p "${_name}" > /dev/null 2>&1 && [ "${_name}" != passthrough ]; then
        printf -v "${_name}" '%s' "${_value}"
    elif declare -p passthrough > /dev/null 2>&1; then
        passthrough+=("${_given[@]}")
    else
        echo "$0: unknown option --${_name}" >&2; exit 1
    fi
done
unset _name _value _given
