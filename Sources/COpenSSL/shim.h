#ifndef SLUICE_COPENSSL_SHIM_H
#define SLUICE_COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

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

#endif
