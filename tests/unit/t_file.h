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
 */
#ifndef M365_T_FILE_H
#define M365_T_FILE_H

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* t_put_file - a file with the given content and mode */

static void t_put_file(const char *path, const char *text, mode_t mode)
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

/* t_owner_of - st_uid of a path (no link followed), or -1 */

static long t_owner_of(const char *path)
{
    struct stat st;

    return (lstat(path, &st) == 0 ? (long) st.st_uid : -1L);
}

/* t_rm_rf - remove a test directory and everything below it */

static void t_rm_rf(const char *path)
{
    char    sub[PATH_MAX];
    struct dirent *de;
    struct stat st;
    DIR    *d;

    if ((d = opendir(path)) != NULL) {
	while ((de = readdir(d)) != NULL) {
	    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
		continue;
	    snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
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
