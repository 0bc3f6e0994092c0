# SPDX-License-Identifier: GPL-2.0-or-later
# bash completion for relinkctl(1).

# Prints the string values of the JSON keys matching $1 (a grep basic
# regular expression) in what `relinkctl ARGS...` prints; nothing when
# relinkd cannot be reached. No JSON parser needed: a "key": "value" pair
# sits on one line whether the JSON is compact or indented.
_relinkctl_json_strings() {
    local key=$1; shift
    relinkctl "$@" 2>/dev/null |
        grep -o "\"\($key\)\": *\"[^\"]*\"" |
        sed 's/^"[^"]*": *"\(.*\)"$/\1/'
}

_relinkctl() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion || return
    else
        COMPREPLY=()
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local commands="status reattach reload add remove qemu-args monitor metrics help"
    local global_opts="-s --socket -c --config --version -h --help"

    # Global options before the command, and the ones to pass on to the
    # relinkctl run that lists names (the same socket or config).
    local i cmd="" cmd_at=0
    local -a conn=()
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -s|--socket|-c|--config)
                conn+=("${words[i]}" "${words[i+1]}")
                ((i++))
                ;;
            -*) ;;
            *)
                cmd=${words[i]}
                cmd_at=$i
                break
                ;;
        esac
    done

    case $prev in
        -s|--socket|-c|--config)
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
    esac

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    # The command's positional words typed so far (options left out).
    local -a args=()
    for ((i = cmd_at + 1; i < cword; i++)); do
        case ${words[i]} in
            --timeout|--qmp|--qemu-user|--macvtap|--passt) ((i++)) ;;
            -*) ;;
            *) args+=("${words[i]}") ;;
        esac
    done

    local opts=""
    case $cmd in
        status)
            opts="--json"
            if [[ $cur != -* && ${#args[@]} -eq 0 ]]; then
                COMPREPLY=($(compgen -W "$(_relinkctl_json_strings name "${conn[@]}" status --json)" -- "$cur"))
                return
            fi
            ;;
        reattach)
            opts="--no-wait --timeout"
            [[ $prev == --timeout ]] && return
            if [[ $cur != -* ]]; then
                case ${#args[@]} in
                    0) COMPREPLY=($(compgen -W "$(_relinkctl_json_strings name "${conn[@]}" status --json)" -- "$cur")) ;;
                    1) COMPREPLY=($(compgen -W "$(_relinkctl_json_strings 'nic\|netdev\|tap' "${conn[@]}" status "${args[0]}" --json)" -- "$cur")) ;;
                esac
                return
            fi
            ;;
        add)
            opts="--qmp --qemu-user --macvtap --passt"
            case $prev in
                --qmp) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                --macvtap)
                    COMPREPLY=($(compgen -W "nic= parent= parent_mac= mac= mode= queues= attach= hub= release_timeout= release= follow_carrier= macvtap=" -- "${cur##*,}"))
                    [[ $cur == *,* ]] && COMPREPLY=("${COMPREPLY[@]/#/${cur%,*},}")
                    compopt -o nospace 2>/dev/null
                    return
                    ;;
                --passt)
                    COMPREPLY=($(compgen -W "netdev= mode= socket= runas=" -- "${cur##*,}"))
                    [[ $cur == *,* ]] && COMPREPLY=("${COMPREPLY[@]/#/${cur%,*},}")
                    compopt -o nospace 2>/dev/null
                    return
                    ;;
            esac
            if [[ $cur != -* && ${#args[@]} -eq 0 ]]; then
                COMPREPLY=($(compgen -f -- "$cur"))
                return
            fi
            ;;
        remove|qemu-args)
            if [[ $cur != -* && ${#args[@]} -eq 0 ]]; then
                COMPREPLY=($(compgen -W "$(_relinkctl_json_strings name "${conn[@]}" status --json)" -- "$cur"))
            fi
            return
            ;;
        monitor)
            opts="--json"
            ;;
        help)
            [[ ${#args[@]} -eq 0 ]] && COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return
            ;;
        reload|metrics)
            ;;
    esac
    [[ $cur == -* ]] && COMPREPLY=($(compgen -W "$opts -h --help" -- "$cur"))
}

complete -F _relinkctl relinkctl
