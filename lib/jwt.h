/*
 * NAME
 *	jwt 3h
 * SUMMARY
 *	signed client assertion (private_key_jwt) for certificate auth
 * SYNOPSIS
 *	#include "jwt.h"
 * DESCRIPTION
 *	jwt_client_assertion() builds the JWT that the token endpoint
 *	accepts instead of a client secret: header {"alg":"PS256",
 *	"typ":"JWT","x5t#S256":<base64url SHA-256 of the DER cert>} (or
 *	RS256 with "x5t" = SHA-1 thumbprint), claims aud (the v2 token
 *	endpoint), iss = sub = client id, jti (random GUID), nbf = iat =
 *	now, exp = now + 600; signature RSA-PSS (salt = digest length) or
 *	PKCS#1 v1.5 over SHA-256, with OpenSSL.  The key file must be
 *	private (file_check_private); the key is wiped after use.
 *	jwt_cert_expiry() reads the notAfter date of the certificate
 *	(alert.c warns before it).
 * DIAGNOSTICS
 *	jwt_cert_expiry(): 0, or -1 with err filled.
 *	jwt_client_assertion(): NULL with err filled (file unreadable, not
 *	a PEM certificate/RSA key, key does not match the certificate).
 */
#ifndef M365_JWT_H
#define M365_JWT_H

#include <stddef.h>
#include <time.h>

#include "conf.h"

extern char *jwt_client_assertion(const char *cert_file, const char *key_file,
				          enum conf_jwt_alg alg,
			           const char *client_id, const char *audience,
			               time_t now, char *err, size_t errlen);
extern int jwt_cert_expiry(const char *cert_file, time_t *not_after,
			           char *err, size_t errlen);

#endif
