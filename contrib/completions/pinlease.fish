# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pinlease_global_optspecs
    string join \n log-level= print-capabilities h/help V/version
end

function __fish_pinlease_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pinlease_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pinlease_using_subcommand
    set -l cmd (__fish_pinlease_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pinlease -n "__fish_pinlease_needs_command" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_needs_command" -l print-capabilities -d 'Print the backend\'s capabilities as JSON (QEMU\'s vhost-user "backend program conventions") and exit'
complete -c pinlease -n "__fish_pinlease_needs_command" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_needs_command" -s V -l version -d 'Print version'
complete -c pinlease -n "__fish_pinlease_needs_command" -f -a "serve" -d 'Serve the device on vhost-user sockets, one frontend at a time on each, until SIGINT or SIGTERM'
complete -c pinlease -n "__fish_pinlease_needs_command" -f -a "inject" -d 'Change a running daemon\'s fault plan (docs/faults.md 1.4)'
complete -c pinlease -n "__fish_pinlease_needs_command" -f -a "status" -d 'Show contexts, MRs, the lease table and counters of a running daemon'
complete -c pinlease -n "__fish_pinlease_needs_command" -f -a "generate" -d 'Write the man pages or print shell completions, generated from this command line\'s own definition'
complete -c pinlease -n "__fish_pinlease_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l socket-path -d 'vhost-user socket to listen on (QEMU\'s chardev path). Exactly one of --socket-path, --fd and socket activation (LISTEN_FDS)' -r -F
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l fd -d 'Serve an inherited, already listening unix socket (a file descriptor number); its file is not removed on exit' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l socket-count -d 'With --socket-path PATH: listen on PATH0 .. PATH{N-1}, one guest each, each with its own device state (at most 64). Under socket activation there is one frontend per passed socket' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l admin-socket -d 'Admin socket for `pinlease status` (created mode 0600)' -r -F
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l max-connections -d 'Exit after serving this many frontends (default: never)' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l event-backlog -d 'Event backlog kept while the driver posts no event buffers' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l scrub-period-ms -d 'Canary scrubber period in milliseconds: every period the device verifies and rewrites canaries in each PL_REG_SCRUB MR (docs/abi.md 5.9.1). 0 = off (the default); at most 3600000' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l faults -d 'Fault plan (TOML, docs/faults.md 1.1); invalid plans stop the daemon before it listens' -r -F
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l fault-seed -d 'Seed of the fault plan\'s random streams (overrides the file\'s)' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l abort-report -d 'Where an `abort` fault writes the status JSON before aborting' -r -F
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l sandbox -d 'Confinement once the sockets are open (docs/security.md). Default: the strictest that works here: namespace, else (as root) chroot; the daemon stops if neither is allowed' -r -f -a "namespace\t'New mount, pid, net, ipc, uts (and user) namespaces; pivot_root into an empty read-only tmpfs; no capabilities'
chroot\t'chroot into an empty directory; no capabilities (root only)'
none\t'No sandbox'"
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l seccomp -d 'What a system call outside the allow-list does (docs/security.md)' -r -f -a "kill\t'The kernel kills the daemon (SIGSYS); the kernel log has the call'
log\t'The call runs and the kernel logs it (audit type=1326): for finding what the list lacks'
trap\t'The calling thread gets SIGSYS (its default action ends the daemon with a core dump, where allowed)'
none\t'No filter'"
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l socket-group -d 'Group (name or number) of the vhost-user socket, made mode 0660, so a frontend running as another user in GROUP can connect' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -l print-capabilities -d 'Print the backend\'s capabilities as JSON (QEMU\'s vhost-user "backend program conventions") and exit; other arguments are ignored'
complete -c pinlease -n "__fish_pinlease_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -l admin-socket -d 'The daemon\'s admin socket' -r -F
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -f -a "add" -d 'Append a rule; prints its id'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -f -a "list" -d 'Show the plan and what it injected'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -f -a "clear" -d 'Remove rule ID, or every rule'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -f -a "load" -d 'Replace every rule (and the seed) with a plan file\'s'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -f -a "now" -d 'Fire one fault now'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and not __fish_seen_subcommand_from add list clear load now help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l point -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l action -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l status -d 'fail: a PL_S_ name without the prefix (EIO, ENOMEM, ...)' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l ms -d 'delay, withhold: milliseconds' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l probability -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l skip -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l count -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from list" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from clear" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from clear" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from load" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from load" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from now" -l action -r -f -a "revoke-mr\t''
spurious-break\t''
needs-reset\t''
abort\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from now" -l frontend -d 'The frontend (slot index) whose device it hits; needed when the daemon serves several sockets' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from now" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from now" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from help" -f -a "add" -d 'Append a rule; prints its id'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from help" -f -a "list" -d 'Show the plan and what it injected'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from help" -f -a "clear" -d 'Remove rule ID, or every rule'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from help" -f -a "load" -d 'Replace every rule (and the seed) with a plan file\'s'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from help" -f -a "now" -d 'Fire one fault now'
complete -c pinlease -n "__fish_pinlease_using_subcommand inject; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pinlease -n "__fish_pinlease_using_subcommand status" -l admin-socket -d 'The daemon\'s admin socket' -r -F
complete -c pinlease -n "__fish_pinlease_using_subcommand status" -l watch -d 'Ask again every SECONDS (0.1 to 86400, fractions allowed) until interrupted or the daemon stops answering; on a terminal each reply replaces the last, as watch(1) does' -r
complete -c pinlease -n "__fish_pinlease_using_subcommand status" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand status" -l json -d 'Print the daemon\'s JSON reply instead of tables (with --watch: one compact JSON object per line)'
complete -c pinlease -n "__fish_pinlease_using_subcommand status" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "man" -d 'Write pinlease.1 and one page per subcommand (pinlease-serve.1, pinlease-inject-add.1, ...) into DIR, which must exist'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "completions" -d 'Print the completion script for SHELL on standard output'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and __fish_seen_subcommand_from man" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and __fish_seen_subcommand_from completions" -l log-level -d 'Log verbosity' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'Write pinlease.1 and one page per subcommand (pinlease-serve.1, pinlease-inject-add.1, ...) into DIR, which must exist'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'Print the completion script for SHELL on standard output'
complete -c pinlease -n "__fish_pinlease_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and not __fish_seen_subcommand_from serve inject status generate help" -f -a "serve" -d 'Serve the device on vhost-user sockets, one frontend at a time on each, until SIGINT or SIGTERM'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and not __fish_seen_subcommand_from serve inject status generate help" -f -a "inject" -d 'Change a running daemon\'s fault plan (docs/faults.md 1.4)'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and not __fish_seen_subcommand_from serve inject status generate help" -f -a "status" -d 'Show contexts, MRs, the lease table and counters of a running daemon'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and not __fish_seen_subcommand_from serve inject status generate help" -f -a "generate" -d 'Write the man pages or print shell completions, generated from this command line\'s own definition'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and not __fish_seen_subcommand_from serve inject status generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and __fish_seen_subcommand_from inject" -f -a "add" -d 'Append a rule; prints its id'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and __fish_seen_subcommand_from inject" -f -a "list" -d 'Show the plan and what it injected'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and __fish_seen_subcommand_from inject" -f -a "clear" -d 'Remove rule ID, or every rule'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and __fish_seen_subcommand_from inject" -f -a "load" -d 'Replace every rule (and the seed) with a plan file\'s'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and __fish_seen_subcommand_from inject" -f -a "now" -d 'Fire one fault now'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'Write pinlease.1 and one page per subcommand (pinlease-serve.1, pinlease-inject-add.1, ...) into DIR, which must exist'
complete -c pinlease -n "__fish_pinlease_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'Print the completion script for SHELL on standard output'
