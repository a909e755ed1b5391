/*
 * NAME
 *	t 3h
 * SUMMARY
 *	minimal unit-test harness (TAP output, exit 1 on any failure)
 * SYNOPSIS
 *	#include "t.h"
 *
 *	static void test_x(void) { T_EQ_INT(1 + 1, 2); T_EQ_STR(s, "a"); }
 *	int main(void) { T_RUN(test_x); return T_DONE(); }
 * DESCRIPTION
 *	Each check prints "not ok" with file:line and the values on
 *	failure; T_DONE() prints "N passed, N failed" and returns the
 *	exit code for main().
 */
#ifndef M365_T_H
#define M365_T_H

#include <stdio.h>
#include <string.h>

static int t_pass, t_fail;
static const char *t_current = "";

#define T_CHECK(cond, ...) do { \
	if (cond) { t_pass++; } else { \
	    t_fail++; \
	    printf("not ok - %s: %s:%d: ", t_current, __FILE__, __LINE__); \
	    printf(__VA_ARGS__); printf("\n"); } \
    } while (0)
#define T_OK(cond) T_CHECK((cond), "%s", #cond)
#define T_EQ_INT(a, b) do { long long t_a_ = (long long) (a), t_b_ = (long long) (b); \
	T_CHECK(t_a_ == t_b_, "%s == %lld, want %lld", #a, t_a_, t_b_); } while (0)
#define T_EQ_STR(a, b) do { const char *t_a_ = (a), *t_b_ = (b); \
	T_CHECK(t_a_ && t_b_ && strcmp(t_a_, t_b_) == 0, "%s == \"%s\", want \"%s\"", \
		#a, t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)"); } while (0)
#define T_CONTAINS(hay, needle) do { const char *t_h_ = (hay), *t_n_ = (needle); \
	T_CHECK(t_h_ && strstr(t_h_, t_n_) != NULL, "%s contains \"%s\" (it is \"%s\")", \
		#hay, t_n_, t_h_ ? t_h_ : "(null)"); } while (0)
#define T_RUN(fn) do { int t_f0_ = t_fail; t_current = #fn; fn(); \
	printf("%s - %s\n", t_fail == t_f0_ ? "ok" : "not ok", #fn); } while (0)
#define T_DONE() (printf("%d passed, %d failed\n", t_pass, t_fail), t_fail ? 1 : 0)

#endif
