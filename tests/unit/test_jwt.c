/* test_jwt - client assertion built by jwt.c, verified with OpenSSL */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "jwt.h"
#include "log.h"
#include "util.h"
#include "t.h"

#define AUD	"https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
#define CLIENT	"11111111-2222-3333-4444-555555555555"

static char dir[1024];
static char cert_path[PATH_MAX];
static char key_path[PATH_MAX];
static char key2_path[PATH_MAX];
static char enc_path[PATH_MAX];
static X509 *cert;
static EVP_PKEY *key;

/* write_key - PEM private key in a 0600 file, optionally encrypted */

static int write_key(const char *path, EVP_PKEY *k, const EVP_CIPHER *enc)
{
    int     fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE   *fp;
    int     ok;

    if (fd < 0 || (fp = fdopen(fd, "w")) == NULL)
	return (-1);
    ok = PEM_write_PrivateKey(fp, k, enc, enc ? (unsigned char *) "secret" : NULL,
			      enc ? 6 : 0, NULL, NULL);
    fclose(fp);
    return (ok == 1 ? 0 : -1);
}

/* setup - key pair, self-signed certificate, PEM files */

static int setup(void)
{
    const char *tmp = getenv("TMPDIR");
    X509_NAME *name;
    EVP_PKEY *key2;
    FILE   *fp;

    snprintf(dir, sizeof(dir), "%s/test_jwt.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL)
	return (-1);
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
    snprintf(key2_path, sizeof(key2_path), "%s/other-key.pem", dir);
    snprintf(enc_path, sizeof(enc_path), "%s/encrypted-key.pem", dir);

    if ((key = EVP_RSA_gen(2048)) == NULL || (key2 = EVP_RSA_gen(2048)) == NULL)
	return (-1);
    cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 4242);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
			       (const unsigned char *) "m365relay test", -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    if (X509_sign(cert, key, EVP_sha256()) <= 0)
	return (-1);
    if ((fp = fopen(cert_path, "w")) == NULL || PEM_write_X509(fp, cert) != 1)
	return (-1);
    fclose(fp);
    if (write_key(key_path, key, NULL) < 0
	|| write_key(key2_path, key2, NULL) < 0
	|| write_key(enc_path, key, EVP_aes_128_cbc()) < 0)
	return (-1);
    EVP_PKEY_free(key2);
    return (0);
}

/* b64url_decode - decode unpadded base64url; returns length or -1 */

static long b64url_decode(const char *in, size_t n, unsigned char *out,
			          size_t outlen)
{
    static const char alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned long acc = 0;
    int     bits = 0;
    size_t  i, o = 0;

    for (i = 0; i < n; i++) {
	const char *p = in[i] ? strchr(alpha, in[i]) : NULL;

	if (p == NULL)
	    return (-1);
	acc = (acc << 6) | (unsigned long) (p - alpha);
	bits += 6;
	if (bits >= 8) {
	    bits -= 8;
	    if (o >= outlen)
		return (-1);
	    out[o++] = (unsigned char) ((acc >> bits) & 0xff);
	}
    }
    return ((long) o);
}

/* decode_json - parse one base64url JWT segment as JSON */

static cJSON *decode_json(const char *seg, size_t n)
{
    unsigned char buf[4096];
    long    len = b64url_decode(seg, n, buf, sizeof(buf) - 1);

    if (len < 0)
	return (NULL);
    buf[len] = 0;
    return (cJSON_Parse((const char *) buf));
}

/* thumb - independent base64url thumbprint of the certificate */

static char *thumb(const EVP_MD *md)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dlen;

    X509_digest(cert, md, d, &dlen);
    return (base64url_encode(d, dlen));
}

/* verify - check the JWT signature with the certificate's public key */

static int verify(const char *jwt, int pss)
{
    const char *dot2 = strrchr(jwt, '.');
    unsigned char sig[1024];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    long    siglen;
    int     ok;

    if (dot2 == NULL)
	return (-1);
    siglen = b64url_decode(dot2 + 1, strlen(dot2 + 1), sig, sizeof(sig));
    if (siglen <= 0)
	return (-1);
    if (EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL,
			     X509_get0_pubkey(cert)) != 1)
	return (-1);
    if (pss) {
	EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
	EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    } else {
	EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING);
    }
    ok = EVP_DigestVerify(ctx, sig, (size_t) siglen, (const unsigned char *) jwt,
			  (size_t) (dot2 - jwt));
    EVP_MD_CTX_free(ctx);
    return (ok == 1 ? 0 : -1);
}

/* jti_ok - 8-4-4-4-12 lower-case hex, version 4, RFC 4122 variant */

static int jti_ok(const char *s)
{
    size_t  i;

    if (s == NULL || strlen(s) != 36)
	return (0);
    for (i = 0; i < 36; i++) {
	if (i == 8 || i == 13 || i == 18 || i == 23) {
	    if (s[i] != '-')
		return (0);
	} else if (!strchr("0123456789abcdef", s[i]) || s[i] == 0) {
	    return (0);
	}
    }
    return (s[14] == '4' && strchr("89ab", s[19]) != NULL);
}

static const char *jstr(cJSON *obj, const char *name)
{
    cJSON  *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return (cJSON_IsString(v) ? v->valuestring : NULL);
}

static double jnum(cJSON *obj, const char *name)
{
    cJSON  *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return (cJSON_IsNumber(v) ? v->valuedouble : -1);
}

/* check_assertion - structure, header, claims and signature */

static void check_assertion(enum conf_jwt_alg alg)
{
    char    err[512] = "";
    time_t  now = time(NULL);
    char   *jwt, *jwt2, *tampered, *want;
    const char *dot1, *dot2;
    cJSON  *hdr, *claims;
    int     pss = alg == CONF_JWT_PS256;

    jwt = jwt_client_assertion(cert_path, key_path, alg, CLIENT, AUD, now,
			       err, sizeof(err));
    T_CHECK(jwt != NULL, "assertion failed: %s", err);
    if (jwt == NULL)
	return;
    dot1 = strchr(jwt, '.');
    dot2 = strrchr(jwt, '.');
    T_OK(dot1 != NULL && dot2 != NULL && dot1 < dot2);
    if (dot1 == NULL || dot2 == NULL || dot1 == dot2) {
	free(jwt);
	return;
    }
    T_OK(strchr(dot1 + 1, '.') == dot2);	/* exactly three parts */
    T_OK(strpbrk(jwt, "+/= \n") == NULL);	/* base64url, unpadded */

    /* Header. */
    hdr = decode_json(jwt, (size_t) (dot1 - jwt));
    T_OK(hdr != NULL);
    T_EQ_STR(jstr(hdr, "alg"), pss ? "PS256" : "RS256");
    T_EQ_STR(jstr(hdr, "typ"), "JWT");
    want = thumb(pss ? EVP_sha256() : EVP_sha1());
    T_EQ_STR(jstr(hdr, pss ? "x5t#S256" : "x5t"), want);
    T_OK(jstr(hdr, pss ? "x5t" : "x5t#S256") == NULL);
    T_EQ_INT(strlen(want), pss ? 43 : 27);
    free(want);
    cJSON_Delete(hdr);

    /* Claims. */
    claims = decode_json(dot1 + 1, (size_t) (dot2 - dot1 - 1));
    T_OK(claims != NULL);
    T_EQ_STR(jstr(claims, "aud"), AUD);
    T_EQ_STR(jstr(claims, "iss"), CLIENT);
    T_EQ_STR(jstr(claims, "sub"), CLIENT);
    T_CHECK(jti_ok(jstr(claims, "jti")), "jti \"%s\" is not a v4 UUID",
	    jstr(claims, "jti") ? jstr(claims, "jti") : "(null)");
    T_EQ_INT((long long) jnum(claims, "nbf"), (long long) now);
    T_EQ_INT((long long) jnum(claims, "iat"), (long long) now);
    T_EQ_INT((long long) jnum(claims, "exp"), (long long) now + 600);

    /* Signature: right padding verifies, the other does not. */
    T_EQ_INT(verify(jwt, pss), 0);
    T_EQ_INT(verify(jwt, !pss), -1);

    /* A changed payload must not verify. */
    tampered = xstrdup(jwt);
    tampered[dot1 - jwt + 5] = tampered[dot1 - jwt + 5] == 'A' ? 'B' : 'A';
    T_EQ_INT(verify(tampered, pss), -1);
    free(tampered);

    /* Every assertion has its own jti. */
    jwt2 = jwt_client_assertion(cert_path, key_path, alg, CLIENT, AUD, now,
				err, sizeof(err));
    T_OK(jwt2 != NULL);
    if (jwt2) {
	cJSON  *c2;
	const char *d1 = strchr(jwt2, '.'), *d2 = strrchr(jwt2, '.');

	c2 = decode_json(d1 + 1, (size_t) (d2 - d1 - 1));
	T_OK(c2 != NULL && jstr(c2, "jti") && jstr(claims, "jti")
	     && strcmp(jstr(c2, "jti"), jstr(claims, "jti")) != 0);
	cJSON_Delete(c2);
	free(jwt2);
    }
    cJSON_Delete(claims);
    free(jwt);
}

static void test_ps256(void)
{
    check_assertion(CONF_JWT_PS256);
}

static void test_rs256(void)
{
    check_assertion(CONF_JWT_RS256);
}

static void test_wrong_key(void)
{
    char    err[512] = "";
    char   *jwt;

    jwt = jwt_client_assertion(cert_path, key2_path, CONF_JWT_PS256, CLIENT,
			       AUD, time(NULL), err, sizeof(err));
    T_OK(jwt == NULL);
    T_CONTAINS(err, "does not match");
    T_CONTAINS(err, key2_path);
    free(jwt);
}

static void test_key_mode(void)
{
    char    err[512] = "";
    char   *jwt;

    T_EQ_INT(chmod(key_path, 0644), 0);
    jwt = jwt_client_assertion(cert_path, key_path, CONF_JWT_PS256, CLIENT,
			       AUD, time(NULL), err, sizeof(err));
    T_OK(jwt == NULL);
    T_CONTAINS(err, "chmod 600");
    T_CONTAINS(err, key_path);
    free(jwt);
    T_EQ_INT(chmod(key_path, 0600), 0);
    err[0] = 0;
    jwt = jwt_client_assertion(cert_path, key_path, CONF_JWT_PS256, CLIENT,
			       AUD, time(NULL), err, sizeof(err));
    T_CHECK(jwt != NULL, "after chmod 600: %s", err);
    free(jwt);
}

static void test_bad_files(void)
{
    char    err[512] = "";
    char    missing[PATH_MAX];
    char   *jwt;

    /* An encrypted key is refused without prompting. */
    jwt = jwt_client_assertion(cert_path, enc_path, CONF_JWT_PS256, CLIENT,
			       AUD, time(NULL), err, sizeof(err));
    T_OK(jwt == NULL);
    T_CONTAINS(err, "unencrypted PEM private key");
    free(jwt);

    /* The key is not a certificate. */
    jwt = jwt_client_assertion(key_path, key_path, CONF_JWT_PS256, CLIENT,
			       AUD, time(NULL), err, sizeof(err));
    T_OK(jwt == NULL);
    T_CONTAINS(err, "does not hold a PEM certificate");
    free(jwt);

    /* Missing files. */
    snprintf(missing, sizeof(missing), "%s/missing.pem", dir);
    jwt = jwt_client_assertion(missing, key_path, CONF_JWT_PS256, CLIENT,
			       AUD, time(NULL), err, sizeof(err));
    T_OK(jwt == NULL);
    T_CONTAINS(err, "cannot open certificate file");
    free(jwt);
    jwt = jwt_client_assertion(cert_path, missing, CONF_JWT_PS256, CLIENT,
			       AUD, time(NULL), err, sizeof(err));
    T_OK(jwt == NULL);
    T_CONTAINS(err, missing);
    free(jwt);
}

/*
 * Past the cap (issue 8.6): no assertion at all, never one cut short.
 * The client id is in iss and sub: 5900 bytes make header.claims 16103
 * bytes and the signature 343 more.
 */
static const struct {
    size_t  id_len;
    const char *err;			/* NULL: it fits */
} jwt_cap_cases[] = {
    {20000, "client assertion too long (client id or token endpoint URL "
    "too long?)"},
    {11000, "client assertion too long (client id or token endpoint URL "
    "too long?)"},
    {5900, "client assertion too long"},	/* only with the signature */
    {5600, NULL},
};

static void test_past_cap(void)
{
    char    err[512];
    char   *id = xmalloc(20001);
    char   *jwt;
    size_t  i, n;

    for (i = 0; i < sizeof(jwt_cap_cases) / sizeof(jwt_cap_cases[0]); i++) {
	n = jwt_cap_cases[i].id_len;
	memset(id, 'c', n);
	id[n] = 0;
	err[0] = 0;
	jwt = jwt_client_assertion(cert_path, key_path, CONF_JWT_PS256, id,
				   AUD, time(NULL), err, sizeof(err));
	if (jwt_cap_cases[i].err) {
	    T_OK(jwt == NULL);
	    T_EQ_STR(err, jwt_cap_cases[i].err);
	} else {
	    T_OK(jwt != NULL && strlen(jwt) <= STRBUF_MAX_SMALL);
	}
	free(jwt);
    }
    free(id);
}

static void cleanup(void)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(key2_path);
    unlink(enc_path);
    rmdir(dir);
    X509_free(cert);
    EVP_PKEY_free(key);
}

int     main(void)
{
    log_open("test_jwt");
    if (setup() < 0) {
	printf("not ok - setup: cannot create key and certificate in %s\n", dir);
	return (1);
    }
    T_RUN(test_ps256);
    T_RUN(test_rs256);
    T_RUN(test_wrong_key);
    T_RUN(test_key_mode);
    T_RUN(test_bad_files);
    T_RUN(test_past_cap);
    cleanup();
    return (T_DONE());
}
