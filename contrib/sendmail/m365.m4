PUSHDIVERT(-1)
#
# m365.m4 - Sendmail mailer "m365": hand messages to m365-relay, which
# sends them through Microsoft Graph (sendMail) with OAuth2.
#
# (This file is read by m4 with comments switched off: every macro name
# in these comments is quoted so that it is not expanded.)
#
# Install: copy this file into the mailer directory of the Sendmail cf
# tree (Debian: /usr/share/sendmail/cf/mailer/m365.m4), then add to
# sendmail.mc, after the `MAILER(`local')' and `MAILER(`smtp')' lines:
#
#	`define(`M365_MAILER_USER', `m365relay:m365relay')dnl'   (optional)
#	`MAILER(`m365')dnl'
#
# and route domains to it with `FEATURE(`mailertable')' (see
# mailertable.example: always the fixed host "graph", e.g.
# "example.com  m365:graph") or send everything that is not local with
# `define(`SMART_HOST', `m365:graph')'.  Rebuild sendmail.cf, restart.
#
# How it runs: flag m with $u in the argument list hands all recipients
# of a message that share the mailer and host to ONE m365-relay run, so
# one message is sent once (one Graph sendMail), however many recipients
# it has; that is why every mailertable entry uses the same host
# ("graph").  $i is Sendmail's queue id: m365-relay starts its log lines
# with it.  $g is the envelope sender after rewriting; "--" keeps a
# recipient that starts with "-" from being read as an option.
#
# m365-relay exits with sysexits(3) codes, which Sendmail understands:
# 0 sent; 75 (EX_TEMPFAIL) the message stays queued and is retried on
# the next queue run; 65/67/77 the message bounces.
#
# Flags: D, F, M add Date:, From:, Message-Id: when missing (Graph needs
# a From:); P adds Return-Path:; h, u keep the case of host and user
# names; n no Unix "From " line; m several recipients per run; 8 pass
# 8-bit data unchanged (m365-relay sends the MIME message as it is,
# base64-encoded, so no 8-to-7-bit conversion is wanted).
#
# The mailer runs as U= (never root: m365-relay refuses to run as root).
# That user must read the configuration, own its secret/key files (mode
# 0600) and write the state directory and log file.
#
# Settings (`define' them before `MAILER(`m365')'):
#   M365_MAILER_PATH    the program      (default /usr/local/bin/m365-relay)
#   M365_MAILER_CONF    its config file  (default /etc/m365relay.conf)
#   M365_MAILER_USER    user:group       (default m365relay:m365relay)
#   M365_MAILER_FLAGS   extra flags      (default none)
#   M365_MAILER_MAX     maximum message size in bytes (default: no
#                       limit here; m365-relay enforces the account's
#                       max_message_size and Graph's limits)
#   M365_MAILER_ARGS    the whole argument vector (overrides the above)
#   M365_MAILER_QGRP    queue group
# `MODIFY_MAILER_FLAGS(`M365', `+X')' (or `-X') changes the flags.
#

ifdef(`M365_MAILER_PATH',,
	`define(`M365_MAILER_PATH', `/usr/local/bin/m365-relay')')
ifdef(`M365_MAILER_CONF',,
	`define(`M365_MAILER_CONF', `/etc/m365relay.conf')')
ifdef(`M365_MAILER_USER',,
	`define(`M365_MAILER_USER', `m365relay:m365relay')')
_DEFIFNOT(`M365_MAILER_FLAGS', `')
ifdef(`M365_MAILER_ARGS',,
	`define(`M365_MAILER_ARGS', `m365-relay -c 'M365_MAILER_CONF` -q $i -f $g -- $u')')
define(`_M365_QGRP', `ifelse(defn(`M365_MAILER_QGRP'),`',`', ` Q=M365_MAILER_QGRP,')')dnl

POPDIVERT

##################################################
###   m365 Mailer specification (m365relay)    ###
##################################################

VERSIONID(`m365relay contrib/sendmail/m365.m4')

Mm365,		P=M365_MAILER_PATH, F=_MODMF_(CONCAT(`DFMPhmnu8', M365_MAILER_FLAGS), `M365'), U=M365_MAILER_USER,
		S=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP/HdrFromSMTP,
		ifdef(`M365_MAILER_MAX', `M=M365_MAILER_MAX, ')T=DNS/RFC822/X-Unix,_M365_QGRP
		A=M365_MAILER_ARGS
