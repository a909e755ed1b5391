/*
 * NAME
 *	jwt 3
 * SUMMARY
 *	signed client assertion (private_key_jwt) for certificate auth
 * DESCRIPTION
 *	See jwt.h.  The certificate and the key are read with OpenSSL's
 *	PEM readers; an encrypted key is refused (there is nobody to type
 *	a passphrase when Postfix runs the relay).  Thumbprints are taken
 *	over the DER form of the certificate (i2d_X509).  The key file
 *	contents and the key object are wiped before returning.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "jwt.h"
#include "strbuf.h"
#include "util.h"

#define JWT_LIFETIME	600		/* exp = now + 10 minutes */
#define JWT_KEY_MAX	(256UL * 1024)	/* a PEM key is a few KB */

/* jwt_ssl_reason - the newest OpenSSL error as text, queue cleared */

static const char *jwt_ssl_reason(char *buf, size_t len)
{
    unsigned long e, last = 0;

    while ((e = ERR_get_error()) != 0)
	last = e;
    if (last == 0)
	snprintf(buf, len, "no detail from OpenSSL");
    else
	ERR_error_string_n(last, buf, len);
    return (buf);
}

/* jwt_no_passphrase - PEM callback: never prompt on a terminal */

static int jwt_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void) buf;
    (void) size;
    (void) rwflag;
    (void) arg;
    return (-1);
}

/* jwt_read_cert - the first PEM certificate in a file */

static X509 *jwt_read_cert(const char *path, char *err, size_t errlen)
{
    struct strbuf pem;
    char    why[256];
    X509   *cert;
    BIO    *bio;
    int     fd;

    /* Public: a symbolic link is fine, a FIFO must not hang us. */
    if ((fd = file_open_checked(path, "certificate file", FILE_FOLLOW, err,
				errlen)) < 0) {
	if (errno != EINVAL)
	    snprintf(err, errlen, "cannot open certificate file %s: %s", path,
		     strerror(errno));
	return (NULL);
    }
    if (file_read_fd(fd, path, JWT_KEY_MAX, &pem, err, errlen) < 0)
	return (NULL);
    if ((bio = BIO_new_mem_buf(pem.data, (int) pem.len)) == NULL) {
	strbuf_free(&pem);
	snprintf(err, errlen, "cannot read certificate file %s: %s", path,
		 jwt_ssl_reason(why, sizeof(why)));
	return (NULL);
    }
    cert = PEM_read_bio_X509(bio, NULL, jwt_no_passphrase, NULL);
    BIO_free(bio);
    strbuf_free(&pem);
    if (cert == NULL) {
	snprintf(err, errlen, "certificate file %s does not hold a PEM "
		 "certificate (-----BEGIN CERTIFICATE-----): %s", path,
		 jwt_ssl_reason(why, sizeof(why)));
	return (NULL);
    }
    return (cert);
}

/* jwt_cert_expiry - when the first certificate in a PEM file expires */

int     jwt_cert_expiry(const char *cert_file, time_t *not_after,
			        char *err, size_t errlen)
{
    X509   *cert;
    struct tm tm;
    int     ok;

    if ((cert = jwt_read_cert(cert_file, err, errlen)) == NULL)
	return (-1);
    memset(&tm, 0, sizeof(tm));
    ok = ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1;
    X509_free(cert);
    if (!ok) {
	snprintf(err, errlen, "certificate file %s: cannot read its expiry "
		 "date (notAfter)", cert_file);
	return (-1);
    }
    *not_after = timegm(&tm);
    return (0);
}

/* jwt_read_key - an unencrypted PEM RSA private key from a private file */

static EVP_PKEY *jwt_read_key(const char *path, char *err, size_t errlen)
{
    struct strbuf pem;
    char    why[256];
    EVP_PKEY *key;
    BIO    *bio;

    if (file_read_private(path, "key file", JWT_KEY_MAX, &pem, err,
			  errlen) < 0)
	return (NULL);
    if ((bio = BIO_new_mem_buf(pem.data, (int) pem.len)) == NULL) {
	strbuf_cleanse(&pem);
	snprintf(err, errlen, "cannot read key file %s: %s", path,
		 jwt_ssl_reason(why, sizeof(why)));
	return (NULL);
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, jwt_no_passphrase, NULL);
    BIO_free(bio);
    strbuf_cleanse(&pem);
    if (key == NULL) {
	snprintf(err, errlen, "key file %s does not hold an unencrypted PEM "
		 "private key (%s); convert it with: openssl pkey -in OLD "
		 "-out %s", path, jwt_ssl_reason(why, sizeof(why)), path);
	return (NULL);
    }
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
	snprintf(err, errlen, "key file %s holds a %s key; certificate "
		 "credentials for Microsoft Entra need an RSA key", path,
		 OBJ_nid2sn(EVP_PKEY_get_base_id(key)));
	EVP_PKEY_free(key);
	return (NULL);
    }
    return (key);
}

/* jwt_thumbprint - base64url digest of the DER certificate */

static char *jwt_thumbprint(X509 *cert, const EVP_MD *md, char *err,
			            size_t errlen)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    unsigned char *der = NULL;
    char    why[256];
    int     len;

    if ((len = i2d_X509(cert, &der)) <= 0) {
	snprintf(err, errlen, "cannot encode the certificate as DER: %s",
		 jwt_ssl_reason(why, sizeof(why)));
	return (NULL);
    }
    if (EVP_Digest(der, (size_t) len, digest, &dlen, md, NULL) != 1) {
	OPENSSL_free(der);
	snprintf(err, errlen, "cannot compute the certificate thumbprint: %s",
		 jwt_ssl_reason(why, sizeof(why)));
	return (NULL);
    }
    OPENSSL_free(der);
    return (base64url_encode(digest, dlen));
}

/* jwt_json_b64 - compact JSON of an object, base64url encoded */

static char *jwt_json_b64(cJSON *obj)
{
    char   *json = cJSON_PrintUnformatted(obj);
    char   *b64;

    if (json == NULL)
	return (NULL);
    b64 = base64url_encode((const unsigned char *) json, strlen(json));
    cJSON_free(json);
    return (b64);
}

/* jwt_sign - SHA-256 signature with RSA-PSS or PKCS#1 v1.5 */

static unsigned char *jwt_sign(EVP_PKEY *key, enum conf_jwt_alg alg,
			               const char *data, size_t *siglen,
			               char *err, size_t errlen)
{
    EVP_MD_CTX *ctx;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL;
    char    why[256];

    if ((ctx = EVP_MD_CTX_new()) == NULL) {
	snprintf(err, errlen, "out of memory in OpenSSL");
	return (NULL);
    }
    if (EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, key) != 1
	|| (alg == CONF_JWT_PS256
	    && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0
		|| EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx,
					       RSA_PSS_SALTLEN_DIGEST) <= 0))
	|| (alg == CONF_JWT_RS256
	    && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
	|| EVP_DigestSign(ctx, NULL, siglen, (const unsigned char *) data,
			  strlen(data)) != 1) {
	snprintf(err, errlen, "cannot sign the client assertion: %s",
		 jwt_ssl_reason(why, sizeof(why)));
	EVP_MD_CTX_free(ctx);
	return (NULL);
    }
    sig = xmalloc(*siglen);
    if (EVP_DigestSign(ctx, sig, siglen, (const unsigned char *) data,
		       strlen(data)) != 1) {
	snprintf(err, errlen, "cannot sign the client assertion: %s",
		 jwt_ssl_reason(why, sizeof(why)));
	free(sig);
	sig = NULL;
    }
    EVP_MD_CTX_free(ctx);
    return (sig);
}

/* jwt_client_assertion - build and sign the private_key_jwt assertion */

char   *jwt_client_assertion(const char *cert_file, const char *key_file,
			             enum conf_jwt_alg alg,
			             const char *client_id, const char *audience,
			             time_t now, char *err, size_t errlen)
{
    X509   *cert = NULL;
    EVP_PKEY *key = NULL;
    cJSON  *hdr = NULL;
    cJSON  *claims = NULL;
    char   *thumb = NULL;
    char   *hdr64 = NULL;
    char   *claims64 = NULL;
    char   *sig64 = NULL;
    unsigned char *sig = NULL;
    size_t  siglen = 0;
    char    jti[40];
    char    why[256];
    struct strbuf out;
    char   *result = NULL;

    ERR_clear_error();
    strbuf_init(&out, STRBUF_MAX_SMALL);
    if (alg != CONF_JWT_PS256 && alg != CONF_JWT_RS256) {
	snprintf(err, errlen, "unsupported JWT algorithm %d", (int) alg);
	goto done;
    }
    if ((key = jwt_read_key(key_file, err, errlen)) == NULL)
	goto done;
    if ((cert = jwt_read_cert(cert_file, err, errlen)) == NULL)
	goto done;
    if (X509_check_private_key(cert, key) != 1) {
	snprintf(err, errlen, "key file %s does not match certificate file "
		 "%s (%s): configure the key that belongs to the certificate "
		 "uploaded to the app registration", key_file, cert_file,
		 jwt_ssl_reason(why, sizeof(why)));
	goto done;
    }
    thumb = jwt_thumbprint(cert, alg == CONF_JWT_PS256 ? EVP_sha256() :
			   EVP_sha1(), err, errlen);
    if (thumb == NULL)
	goto done;
    if (random_uuid(jti, sizeof(jti)) < 0) {
	snprintf(err, errlen, "cannot get random bytes for the assertion id: "
		 "%s (and /dev/urandom failed)", jwt_ssl_reason(why,
							     sizeof(why)));
	goto done;
    }

    /* Header and claims, compact JSON. */
    if ((hdr = cJSON_CreateObject()) == NULL
	|| (claims = cJSON_CreateObject()) == NULL
	|| cJSON_AddStringToObject(hdr, "alg", alg == CONF_JWT_PS256 ?
				   "PS256" : "RS256") == NULL
	|| cJSON_AddStringToObject(hdr, "typ", "JWT") == NULL
	|| cJSON_AddStringToObject(hdr, alg == CONF_JWT_PS256 ? "x5t#S256" :
				   "x5t", thumb) == NULL
	|| cJSON_AddStringToObject(claims, "aud", audience) == NULL
	|| cJSON_AddStringToObject(claims, "iss", client_id) == NULL
	|| cJSON_AddStringToObject(claims, "sub", client_id) == NULL
	|| cJSON_AddStringToObject(claims, "jti", jti) == NULL
	|| cJSON_AddNumberToObject(claims, "nbf", (double) now) == NULL
	|| cJSON_AddNumberToObject(claims, "iat", (double) now) == NULL
	|| cJSON_AddNumberToObject(claims, "exp",
				   (double) (now + JWT_LIFETIME)) == NULL
	|| (hdr64 = jwt_json_b64(hdr)) == NULL
	|| (claims64 = jwt_json_b64(claims)) == NULL) {
	snprintf(err, errlen, "out of memory building the client assertion");
	goto done;
    }
    if (strbuf_printf(&out, "%s.%s", hdr64, claims64) < 0) {
	snprintf(err, errlen, "client assertion too long (client id or "
		 "token endpoint URL too long?)");
	goto done;
    }
    if ((sig = jwt_sign(key, alg, out.data, &siglen, err, errlen)) == NULL)
	goto done;
    sig64 = base64url_encode(sig, siglen);
    if (strbuf_printf(&out, ".%s", sig64) < 0) {
	snprintf(err, errlen, "client assertion too long");
	goto done;
    }
    result = strbuf_take(&out);

done:
    EVP_PKEY_free(key);
    X509_free(cert);
    cJSON_Delete(hdr);
    cJSON_Delete(claims);
    free(thumb);
    free(hdr64);
    free(claims64);
    free(sig64);
    free(sig);
    strbuf_free(&out);
    ERR_clear_error();
    return (result);
}
