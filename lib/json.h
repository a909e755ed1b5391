/*
 * NAME
 *	json 3h
 * SUMMARY
 *	cJSON member helpers and private JSON state files
 * SYNOPSIS
 *	#include "json.h"
 * DESCRIPTION
 *	json_get_str() returns a malloc()ed copy of a non-empty string
 *	member, else NULL.  json_get_num() returns a number member, a
 *	boolean member as 1 or 0, else 0.  json_add_str() adds a string
 *	member, or null when value is NULL; 0, or -1 when out of memory.
 *	json_wipe() overwrites every string of a tree (for trees that
 *	hold secrets; cJSON_Delete() does not).
 *
 *	json_file_load() reads a small JSON state file (at most max
 *	bytes) and parses it; what names the file in error texts
 *	("token file").  It does not follow a symbolic link.  With
 *	JSON_FILE_PRIVATE the file must also pass file_check_private()
 *	(mode 0600, owned by us); else it must be a regular file.  The
 *	read buffer is wiped.  Results: 1 and *root (a JSON object; the
 *	caller deletes it), 0 when the file does not exist, -1 with err
 *	set, -2 when the text is not a JSON object (the caller says what
 *	to do with a damaged file).
 */
#ifndef M365_JSON_H
#define M365_JSON_H

#include <stddef.h>

#include <cJSON.h>

#define JSON_FILE_PRIVATE	(1<<0)	/* like a secret: file_check_private */

extern char *json_get_str(const cJSON *obj, const char *name);
extern double json_get_num(const cJSON *obj, const char *name);
extern int json_add_str(cJSON *obj, const char *name, const char *value);
extern void json_wipe(cJSON *item);
extern int json_file_load(const char *path, const char *what, size_t max,
			          int flags, cJSON **root, char *err,
			          size_t errlen);

#endif
