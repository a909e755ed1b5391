/*
 * NAME
 *	fuzz 3h
 * SUMMARY
 *	what every libFuzzer target of tests/fuzz shares
 * SYNOPSIS
 *	#include "fuzz.h"
 *
 *	int	LLVMFuzzerInitialize(int *argc, char ***argv)
 *	{
 *	    return (fuzz_init("fuzz_x", argc, argv));
 *	}
 * DESCRIPTION
 *	fuzz_init() starts a target: it names the target for
 *	fuzz_violated(), sends the log to /dev/null (a line per input
 *	would slow the fuzzer down) and makes running out of memory a
 *	crash, a finding (abort()), instead of the programs' exit(75).
 *	It returns 0, LLVMFuzzerInitialize()'s success.
 *
 *	fuzz_violated() prints "NAME: invariant violated: WHAT" to stderr;
 *	the target's fuzz_fail() adds what it knows, then calls abort(),
 *	which libFuzzer reports as a crash.
 *
 *	fuzz_printable() is true when the buffer of size bytes holds a
 *	NUL and only bytes 0x20..0x7e before it (a text fit for a log).
 *
 *	fuzz_scratch() creates a private scratch directory under the
 *	temporary directory, returns its name and puts the path of FILE
 *	in it into path; both are removed at exit.  It aborts when it
 *	cannot.
 *
 *	fuzz_input_open() opens (creates) the file at path for the
 *	inputs of a target that reads from a descriptor, as msg_read()
 *	reads the MTA's pipe; fuzz_input_set() replaces its content with
 *	one input and rewinds it.  Both abort() when they cannot.
 */
#ifndef M365_FUZZ_H
#define M365_FUZZ_H

#include <stddef.h>
#include <stdint.h>

extern int LLVMFuzzerInitialize(int *, char ***);
extern int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

extern int fuzz_init(const char *, int *, char ***);
extern void fuzz_violated(const char *);
extern int fuzz_printable(const char *, size_t);
extern const char *fuzz_scratch(const char *, char *, size_t);
extern int fuzz_input_open(const char *);
extern void fuzz_input_set(int, const char *, const uint8_t *, size_t);

#endif
