#!/bin/sh
# The compose stack's preflight check (docker-compose.yml, service `preflight`): refuses to
# start the stack with the public development passwords of config/.env.dev (every one starts
# with `dev-only-`) unless ENERGYMON_DEV_STACK=true says this is a development stack. Every
# other service waits for this check to exit 0, so none of them starts, or creates a user with
# such a password, before it passed.
#
# Reads ENERGYMON_DEV_STACK (true, or false/empty) and every variable whose name ends in
# PASSWORD. Exit 0: go on. Exit 1: one line on stderr naming the variables. POSIX sh only.
set -u

prog="energymon preflight"

dev_stack=${ENERGYMON_DEV_STACK:-false}
case $dev_stack in
	true | false) ;;
	*)
		echo "$prog: ENERGYMON_DEV_STACK='$dev_stack' is neither true nor false; set ENERGYMON_DEV_STACK=true for a development stack, false (or nothing) otherwise" >&2
		exit 1
		;;
esac

# Names only, from `env`; each is a valid shell name before it is expanded.
names=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*PASSWORD\)=.*/\1/p' | sort -u)

found=""
for name in $names; do
	eval "value=\${$name-}"
	case $value in
		dev-only-*) found="${found:+$found, }$name" ;;
	esac
done

if [ -z "$found" ]; then
	echo "$prog: no development password in use"
	exit 0
fi
if [ "$dev_stack" = true ]; then
	echo "$prog: development stack (ENERGYMON_DEV_STACK=true): $found hold public dev-only- passwords; never expose this stack"
	exit 0
fi
echo "$prog: refusing to start: $found hold public development passwords (dev-only-..., config/.env.dev); set your own in your env file (docs/deployment.md, Secrets), or set ENERGYMON_DEV_STACK=true to run a development stack" >&2
exit 1
