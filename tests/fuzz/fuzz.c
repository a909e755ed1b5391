/*
 * NAME
 *	fuzz - what every libFuzzer target of tests/fuzz shares
 * SUMMARY
 *	start of a target, the invariant report, a scratch directory
 * DESCRIPTION
 *	See fuzz.h.  Linked into every target (tests/fuzz/fuzz.am).
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "fuzz.h"

static const char *fuzz_name = "fuzz";
static char fuzz_dir[4096];
static char fuzz_file[4200];

/* fuzz_oom - out of memory is a finding, not an exit(75) */

static void fuzz_oom(void)
{
    abort();
}

/* fuzz_init - name the target, quiet logging, crash on out of memory */

int     fuzz_init(const char *name, int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    fuzz_name = name;
    (void) log_to_file("/dev/null");
    xalloc_set_oom_hook(fuzz_oom);
    return (0);
}

/* fuzz_violated - report a broken invariant (the caller aborts) */

void    fuzz_violated(const char *what)
{
    fprintf(stderr, "%s: invariant violated: %s\n", fuzz_name, what);
}

/* fuzz_printable - a terminated buffer of bytes 0x20..0x7e */

int     fuzz_printable(const char *buf, size_t size)
{
    const char *end = memchr(buf, 0, size);

    if (end == NULL)
	return (0);
    for (; buf < end; buf++)
	if ((unsigned char) *buf < 0x20 || (unsigned char) *buf >= 0x7f)
	    return (0);
    return (1);
}

/* fuzz_cleanup - remove the scratch file and directory */

static void fuzz_cleanup(void)
{
    if (fuzz_file[0])
	(void) unlink(fuzz_file);
    if (fuzz_dir[0])
	(void) rmdir(fuzz_dir);
}

/* fuzz_scratch - a scratch directory (returned); path is FILE in it */

const char *fuzz_scratch(const char *file, char *path, size_t len)
{
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/%s.XXXXXX",
	     file_tmpdir(NULL), fuzz_name);
    if (mkdtemp(fuzz_dir) == NULL) {
	perror(fuzz_dir);
	abort();
    }
    snprintf(fuzz_file, sizeof(fuzz_file), "%s/%s", fuzz_dir, file);
    snprintf(path, len, "%s", fuzz_file);
    atexit(fuzz_cleanup);
    return (fuzz_dir);
}

/* fuzz_input_open - the scratch file a target feeds its inputs through */

int     fuzz_input_open(const char *path)
{
    int     fd;

    if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
	perror(path);
	abort();
    }
    return (fd);
}

/* fuzz_input_set - the file holds exactly this input, read from 0 */

void    fuzz_input_set(int fd, const char *path, const uint8_t *data,
		               size_t size)
{
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t) size
	|| lseek(fd, 0, SEEK_SET) != 0) {
	perror(path);
	abort();
    }
}
