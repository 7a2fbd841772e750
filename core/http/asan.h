/* asan: whether this build runs under AddressSanitizer. Keepers of released objects (server.c's
 * spare requests, proxy.c's spare calls) keep less then, so a use after release is still caught. */
#ifndef RH_HTTP_ASAN_H
#define RH_HTTP_ASAN_H

#if defined(__has_feature) /* clang names ASan so; gcc defines __SANITIZE_ADDRESS__ */
#if __has_feature(address_sanitizer)
#define RH_UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(RH_UNDER_ASAN)
#define RH_UNDER_ASAN 1
#endif

#endif
