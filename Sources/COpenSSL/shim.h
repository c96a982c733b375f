#ifndef SLUICE_COPENSSL_SHIM_H
#define SLUICE_COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/pem.h>
#include <openssl/params.h>
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>

/* Adapters for OpenSSL macros that Swift cannot import. Every adapter is prefixed cssl_. */

static inline long cssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

static inline int cssl_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

/* No TLS compression (CRIME) and no renegotiation. SSL_OP_* are built from a macro. */
static inline void cssl_CTX_set_secure_options(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
}

static inline long cssl_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}

static inline size_t cssl_BIO_pending(BIO *bio) {
    return (size_t)BIO_pending(bio);
}

static inline void cssl_free(void *pointer) {
    OPENSSL_free(pointer);
}

static inline long cssl_BIO_set_mem_eof_return(BIO *bio, int value) {
    return BIO_set_mem_eof_return(bio, value);
}

static inline X509 *cssl_get_peer_certificate(const SSL *ssl) {
    return SSL_get1_peer_certificate(ssl);
}

/* Writes a new P-256 key and a self-signed certificate for it (CN=common_name, the given
   subjectAltName, valid from an hour ago for `days`) as PEM files. Returns 1 on success. */
static inline int cssl_write_self_signed(const char *certificate_path, const char *key_path,
                                         const char *common_name, const char *subject_alt_name, long days) {
    int ok = 0;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *certificate = X509_new();
    FILE *file = NULL;
    if (key == NULL || certificate == NULL) goto done;
    if (!X509_set_version(certificate, 2)) goto done;
    {
        unsigned char serial[16];
        BIGNUM *number = NULL;
        if (RAND_bytes(serial, sizeof serial) != 1) goto done;
        serial[0] &= 0x7f;
        number = BN_bin2bn(serial, sizeof serial, NULL);
        if (number == NULL || BN_to_ASN1_INTEGER(number, X509_get_serialNumber(certificate)) == NULL) { BN_free(number); goto done; }
        BN_free(number);
    }
    if (X509_gmtime_adj(X509_getm_notBefore(certificate), -3600) == NULL) goto done;
    if (X509_gmtime_adj(X509_getm_notAfter(certificate), days * 86400) == NULL) goto done;
    if (!X509_set_pubkey(certificate, key)) goto done;
    {
        X509_NAME *name = X509_get_subject_name(certificate);
        if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)common_name, -1, -1, 0)) goto done;
        if (!X509_set_issuer_name(certificate, name)) goto done;
    }
    {
        X509V3_CTX context;
        X509V3_set_ctx_nodb(&context);
        X509V3_set_ctx(&context, certificate, certificate, NULL, NULL, 0);
        X509_EXTENSION *extension = X509V3_EXT_conf_nid(NULL, &context, NID_subject_alt_name, subject_alt_name);
        if (extension == NULL) goto done;
        int added = X509_add_ext(certificate, extension, -1);
        X509_EXTENSION_free(extension);
        if (!added) goto done;
    }
    if (!X509_sign(certificate, key, EVP_sha256())) goto done;
    {
        int descriptor = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);  /* a private key: owner only */
        file = descriptor < 0 ? NULL : fdopen(descriptor, "w");
        if (file == NULL && descriptor >= 0) close(descriptor);
    }
    if (file == NULL || !PEM_write_PrivateKey(file, key, NULL, NULL, 0, NULL, NULL)) goto done;
    fclose(file);
    file = fopen(certificate_path, "wx");
    if (file == NULL || !PEM_write_X509(file, certificate)) goto done;
    ok = 1;
done:
    if (file != NULL) fclose(file);
    X509_free(certificate);
    EVP_PKEY_free(key);
    return ok;
}

/* An HMAC keyed once: the digest fetched and the key's inner and outer blocks hashed when it
   is made, so that each MAC after that costs a copy, the data and the final blocks (OpenSSL 3's
   one-shot HMAC() fetches both algorithms by name on every call). NULL on failure. */
static inline EVP_MAC_CTX *cssl_hmac_key(const char *digest, const unsigned char *key, size_t key_length) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) return NULL;
    EVP_MAC_CTX *context = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);  /* the context holds its own reference */
    if (context == NULL) return NULL;
    OSSL_PARAM parameters[2] = {
        OSSL_PARAM_construct_utf8_string("digest", (char *)digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(context, key, key_length, parameters) != 1) {
        EVP_MAC_CTX_free(context);
        return NULL;
    }
    return context;
}

/* The MAC of `data` under a key from cssl_hmac_key, which is only read (so any thread may
   use it at once): the work happens on a copy. Returns the MAC's length, or 0 on failure. */
static inline size_t cssl_hmac(const EVP_MAC_CTX *key, const unsigned char *data, size_t length,
                               unsigned char *output, size_t capacity) {
    EVP_MAC_CTX *context = EVP_MAC_CTX_dup(key);
    if (context == NULL) return 0;
    size_t written = 0;
    int ok = EVP_MAC_update(context, data, length) == 1 && EVP_MAC_final(context, output, &written, capacity) == 1;
    EVP_MAC_CTX_free(context);
    return ok ? written : 0;
}

#endif
