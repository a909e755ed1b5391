/*
 * NAME
 *	t_file 3h
 * SUMMARY
 *	file helpers for the unit tests that make and judge files
 * SYNOPSIS
 *	#include "t.h"
 *	#include "t_file.h"
 * DESCRIPTION
 *	t_put_file() writes a file with a text and a mode (replacing one
 *	that exists), t_owner_of() is the owner of a path without
 *	following a link (-1 when missing), t_rm_rf() removes a test
 *	directory tree.
 *
 *	t_tmpdir() makes a fresh directory $TMPDIR/NAME.XXXXXX (/tmp when
 *	TMPDIR is unset, empty or too long for buf) and t_write_file()
 *	writes a file with a text and a mode; both are set-up steps, not
 *	checks (no ok count), and end the test (exit 1) when they fail.
 *
 *	All are inline: a test gets no warning for those it does not use.
 */
#ifndef M365_T_FILE_H
#define M365_T_FILE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* t_put_file - a file with the given content and mode */

static inline void t_put_file(const char *path, const char *text, mode_t mode)
{
    int     fd;

    (void) unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    T_OK(fd >= 0);
    if (fd < 0)
	return;
    T_EQ_INT(write(fd, text, strlen(text)), (long) strlen(text));
    T_EQ_INT(fchmod(fd, mode), 0);
    close(fd);
}

/* t_tmpdir - a fresh directory $TMPDIR/NAME.XXXXXX in buf, or exit 1 */

static inline char *t_tmpdir(char *buf, size_t len, const char *name)
{
    const char *tmp = getenv("TMPDIR");

    if (tmp == NULL || *tmp == 0
	|| (size_t) snprintf(buf, len, "%s/%s.XXXXXX", tmp, name) >= len)
	snprintf(buf, len, "/tmp/%s.XXXXXX", name);
    if (mkdtemp(buf) == NULL) {
	printf("not ok - mkdtemp %s: %s\n", buf, strerror(errno));
	exit(1);
    }
    return (buf);
}

/* t_write_file - a file with the given content and mode, or exit 1 */

static inline void t_write_file(const char *path, const char *text, mode_t mode)
{
    FILE   *fp = fopen(path, "w");

    if (fp == NULL) {
	perror(path);
	exit(1);
    }
    fputs(text, fp);
    fclose(fp);
    chmod(path, mode);
}

/* t_owner_of - st_uid of a path (no link followed), or -1 */

static inline long t_owner_of(const char *path)
{
    struct stat st;

    return (lstat(path, &st) == 0 ? (long) st.st_uid : -1L);
}

/* t_rm_rf - remove a test directory and everything below it */

static inline void t_rm_rf(const char *path)
{
    char    sub[PATH_MAX];
    struct dirent *de;
    struct stat st;
    DIR    *d;

    if ((d = opendir(path)) != NULL) {
	while ((de = readdir(d)) != NULL) {
	    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
		continue;
	    if ((size_t) snprintf(sub, sizeof(sub), "%s/%s", path,
				  de->d_name) >= sizeof(sub))
		continue;
	    if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
		t_rm_rf(sub);
	    else
		unlink(sub);
	}
	closedir(d);
    }
    rmdir(path);
}

#endif
