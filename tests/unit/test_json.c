/* test_json - cJSON member helpers and private JSON state files */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "json.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char dir[1024];

static void test_get(void)
{
    cJSON  *obj = cJSON_Parse("{\"s\":\"abc\",\"e\":\"\",\"n\":42.5,"
			      "\"t\":true,\"f\":false,\"z\":null,"
			      "\"ns\":\"7\"}");
    char   *s;

    T_OK(obj != NULL);
    s = json_get_str(obj, "s");
    T_EQ_STR(s, "abc");
    free(s);
    T_OK(json_get_str(obj, "e") == NULL);	/* empty string: unset */
    T_OK(json_get_str(obj, "n") == NULL);	/* not a string */
    T_OK(json_get_str(obj, "z") == NULL);
    T_OK(json_get_str(obj, "missing") == NULL);
    T_OK(json_get_num(obj, "n") == 42.5);
    T_OK(json_get_num(obj, "t") == 1);
    T_OK(json_get_num(obj, "f") == 0);
    T_OK(json_get_num(obj, "ns") == 0);	/* a numeric string is not */
    T_OK(json_get_num(obj, "missing") == 0);
    T_OK(json_get_str(NULL, "s") == NULL);
    T_OK(json_get_num(NULL, "n") == 0);
    cJSON_Delete(obj);
}

static void test_add_wipe(void)
{
    cJSON  *obj = cJSON_CreateObject();
    cJSON  *sub;
    char   *text;
    char   *keep;

    T_EQ_INT(json_add_str(obj, "a", "x\"y"), 0);
    T_EQ_INT(json_add_str(obj, "b", NULL), 0);
    text = cJSON_PrintUnformatted(obj);
    T_EQ_STR(text, "{\"a\":\"x\\\"y\",\"b\":null}");
    free(text);

    /* Every string of the tree, nested ones too, is overwritten. */
    sub = cJSON_AddObjectToObject(obj, "sub");
    T_EQ_INT(json_add_str(sub, "secret", "hunter2"), 0);
    keep = cJSON_GetObjectItemCaseSensitive(sub, "secret")->valuestring;
    json_wipe(obj);
    T_EQ_INT(keep[0], 0);
    T_EQ_INT(cJSON_GetObjectItemCaseSensitive(obj, "a")->valuestring[0], 0);
    T_OK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(obj, "b")));
    json_wipe(NULL);
    cJSON_Delete(obj);
}

static void test_file_load(void)
{
    char    path[PATH_MAX];
    char    link[PATH_MAX];
    char    want[PATH_MAX + 100];
    char    err[PATH_MAX + 200];
    cJSON  *root = (cJSON *) 1;

    /* A missing file is not an error. */
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    T_EQ_INT(json_file_load(path, "state file", 1024, 0, &root, err,
			    sizeof(err)), 0);
    T_OK(root == NULL);

    /* A good file. */
    snprintf(path, sizeof(path), "%s/good.json", dir);
    t_write_file(path, "{\"k\":\"v\",\"n\":3}", 0600);
    T_EQ_INT(json_file_load(path, "token file", 1024, JSON_FILE_PRIVATE,
			    &root, err, sizeof(err)), 1);
    T_OK(cJSON_IsObject(root));
    T_OK(json_get_num(root, "n") == 3);
    cJSON_Delete(root);

    /* Private files must not be readable by others; plain ones may. */
    chmod(path, 0644);
    err[0] = 0;
    T_EQ_INT(json_file_load(path, "token file", 1024, JSON_FILE_PRIVATE,
			    &root, err, sizeof(err)), -1);
    T_OK(root == NULL);
    T_CONTAINS(err, "token file ");
    T_CONTAINS(err, "chmod 600");
    T_EQ_INT(json_file_load(path, "state file", 1024, 0, &root, err,
			    sizeof(err)), 1);
    cJSON_Delete(root);

    /* Not an object: -2, and the caller words the error. */
    snprintf(path, sizeof(path), "%s/array.json", dir);
    t_write_file(path, "[1,2]", 0600);
    T_EQ_INT(json_file_load(path, "state file", 1024, 0, &root, err,
			    sizeof(err)), -2);
    T_OK(root == NULL);
    snprintf(path, sizeof(path), "%s/broken.json", dir);
    t_write_file(path, "{\"a\":", 0600);
    T_EQ_INT(json_file_load(path, "state file", 1024, JSON_FILE_PRIVATE,
			    &root, err, sizeof(err)), -2);

    /* Too large. */
    snprintf(path, sizeof(path), "%s/big.json", dir);
    t_write_file(path, "{\"a\":\"0123456789012345678901234567890123456789\"}",
		 0600);
    T_EQ_INT(json_file_load(path, "state file", 16, 0, &root, err,
			    sizeof(err)), -1);
    T_CONTAINS(err, "larger than 16 bytes");

    /* A symbolic link is not followed (plain mode). */
    snprintf(path, sizeof(path), "%s/good.json", dir);
    snprintf(link, sizeof(link), "%s/link.json", dir);
    T_EQ_INT(symlink(path, link), 0);
    T_EQ_INT(json_file_load(link, "state file", 1024, 0, &root, err,
			    sizeof(err)), -1);
    snprintf(want, sizeof(want), "state file %s is a symbolic link", link);
    T_CONTAINS(err, want);
    unlink(link);

    /* Another error than "missing". */
    snprintf(path, sizeof(path), "%s/good.json/x", dir);
    T_EQ_INT(json_file_load(path, "state file", 1024, 0, &root, err,
			    sizeof(err)), -1);
    T_CONTAINS(err, "cannot access state file ");
    T_CONTAINS(err, "Not a directory");
}

int     main(void)
{
    int     rc;

    t_tmpdir(dir, sizeof(dir), "test_json");
    T_RUN(test_get);
    T_RUN(test_add_wipe);
    T_RUN(test_file_load);
    rc = T_DONE();
    t_rm_rf(dir);
    return (rc);
}
