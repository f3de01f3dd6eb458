/* realpath: X/Open */
#define _XOPEN_SOURCE 700

#include "npy.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

int64_t rda_npy_count(const rda_npy *a) {
    int64_t n = 1;
    for (int32_t i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

void rda_npy_free(rda_npy *a) {
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

/* Value of 'key' in the header dict: pointer just past "'key':" and spaces. */
static const char *find_key(const char *h, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(h, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == ':') p++;
    return p;
}

rda_status rda_npy_read(const char *path, rda_npy *out, char *err, size_t n) {
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "%s: cannot open", path);
        return RDA_STATUS_IO_ERROR;
    }
    rda_status st = rda_npy_read_stream(f, path, out, err, n);
    fclose(f);
    return st;
}

rda_status rda_npy_read_stream(FILE *f, const char *path, rda_npy *out, char *err, size_t n) {
    memset(out, 0, sizeof(*out));
    rda_status st = RDA_STATUS_IO_ERROR;
    char *hdr = NULL;
    unsigned char pre[10];
    if (fread(pre, 1, 8, f) != 8 || memcmp(pre, magic, 6) != 0) {
        snprintf(err, n, "%s: not a .npy file", path);
        goto done;
    }
    uint32_t hlen;
    if (pre[6] == 1) {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) goto short_read;
        hlen = (uint32_t)b[0] | ((uint32_t)b[1] << 8);
    } else if (pre[6] == 2 || pre[6] == 3) {
        unsigned char b[4];
        if (fread(b, 1, 4, f) != 4) goto short_read;
        hlen = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    } else {
        snprintf(err, n, "%s: unsupported .npy version %d", path, pre[6]);
        goto done;
    }
    if (hlen > (1u << 20)) {
        snprintf(err, n, "%s: header too long", path);
        goto done;
    }
    hdr = calloc(1, hlen + 1);
    if (!hdr || fread(hdr, 1, hlen, f) != hlen) goto short_read;
    const char *d = find_key(hdr, "descr"), *fo = find_key(hdr, "fortran_order"),
               *sh = find_key(hdr, "shape");
    if (!d || !fo || !sh) {
        snprintf(err, n, "%s: malformed header", path);
        goto done;
    }
    if (strncmp(d, "'<f4'", 5) == 0)
        out->dtype = RDA_DTYPE_F32;
    else if (strncmp(d, "'<f2'", 5) == 0)
        out->dtype = RDA_DTYPE_F16;
    else if (strncmp(d, "'<f8'", 5) == 0)
        out->dtype = RDA_DTYPE_F64;
    else {
        snprintf(err, n, "%s: dtype %.6s not supported (use little-endian f2, f4 or f8)", path, d);
        st = RDA_STATUS_UNSUPPORTED;
        goto done;
    }
    if (strncmp(fo, "False", 5) != 0) {
        snprintf(err, n, "%s: Fortran-ordered arrays are not supported", path);
        st = RDA_STATUS_UNSUPPORTED;
        goto done;
    }
    if (*sh != '(') {
        snprintf(err, n, "%s: malformed shape", path);
        goto done;
    }
    sh++;
    int64_t count = 1;
    while (*sh && *sh != ')') {
        while (*sh == ' ' || *sh == ',') sh++;
        if (*sh == ')') break;
        char *end;
        long long v = strtoll(sh, &end, 10);
        if (end == sh || v < 0 || out->ndim == RDA_MAX_DIMS) {
            snprintf(err, n, "%s: shape must have 1 to %d non-negative sizes", path, RDA_MAX_DIMS);
            st = RDA_STATUS_UNSUPPORTED;
            goto done;
        }
        out->shape[out->ndim++] = v;
        if (__builtin_mul_overflow(count, (int64_t)v, &count)) {
            snprintf(err, n, "%s: size overflows", path);
            st = RDA_STATUS_OVERFLOW;
            goto done;
        }
        sh = end;
    }
    /* the data the header promises must be what the file holds, checked
     * before anything is allocated */
    int64_t bytes64;
    if (__builtin_mul_overflow(count, (int64_t)rda_dtype_size(out->dtype), &bytes64)) {
        snprintf(err, n, "%s: size overflows", path);
        st = RDA_STATUS_OVERFLOW;
        goto done;
    }
    long here = ftell(f), end = -1;
    if (here >= 0 && fseek(f, 0, SEEK_END) == 0) end = ftell(f);
    if (here < 0 || end < 0 || fseek(f, here, SEEK_SET) != 0 || (int64_t)(end - here) != bytes64) {
        snprintf(err, n, "%s: the header's shape needs %lld bytes of data, the file holds %lld", path,
                 (long long)bytes64, here < 0 || end < 0 ? -1LL : (long long)(end - here));
        st = RDA_STATUS_IO_ERROR;
        goto done;
    }
    size_t bytes = (size_t)bytes64;
    out->data = malloc(bytes ? bytes : 1);
    if (!out->data) {
        snprintf(err, n, "%s: out of memory", path);
        st = RDA_STATUS_OUT_OF_MEMORY;
        goto done;
    }
    if (fread(out->data, 1, bytes, f) != bytes) goto short_read;
    st = RDA_STATUS_SUCCESS;
    goto done;
short_read:
    snprintf(err, n, "%s: file is truncated", path);
    st = RDA_STATUS_IO_ERROR;
done:
    if (st != RDA_STATUS_SUCCESS) rda_npy_free(out);
    free(hdr);
    return st;
}

rda_status rda_npy_write_temp(const char *path, rda_dtype dtype, int32_t ndim, const int64_t *shape,
                              const void *data, char *tmp, size_t tmp_len, char *err, size_t n) {
    tmp[0] = '\0';
    const char *descr = dtype == RDA_DTYPE_F32 ? "<f4" : dtype == RDA_DTYPE_F16 ? "<f2" : dtype == RDA_DTYPE_F64 ? "<f8" : NULL;
    if (!descr) {
        snprintf(err, n, "%s: %s cannot be written to .npy (convert to fp32)", path, rda_dtype_name(dtype));
        return RDA_STATUS_UNSUPPORTED;
    }
    char dict[256], shp[128] = "";
    int64_t count = 1;
    for (int32_t i = 0; i < ndim; i++) {
        char one[32];
        snprintf(one, sizeof one, "%lld,%s", (long long)shape[i], (ndim > 1 && i < ndim - 1) ? " " : "");
        strncat(shp, one, sizeof shp - strlen(shp) - 1);
        count *= shape[i];
    }
    if (ndim > 1) shp[strlen(shp) - 1] = '\0'; /* (a, b, c) without trailing comma */
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shp);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    if ((size_t)snprintf(tmp, tmp_len, "%s.tmp-XXXXXX", path) >= tmp_len) {
        snprintf(err, n, "%s: path too long", path);
        tmp[0] = '\0';
        return RDA_STATUS_IO_ERROR;
    }
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        snprintf(err, n, "%s: cannot open for writing (%s)", path, strerror(errno));
        if (fd >= 0) close(fd), remove(tmp);
        tmp[0] = '\0';
        return RDA_STATUS_IO_ERROR;
    }
    uint16_t hl = (uint16_t)(len + pad + 1);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    size_t bytes = (size_t)count * rda_dtype_size(dtype);
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)len, f) == (size_t)len;
    for (int i = 0; i < pad && ok; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, 1, bytes, f) == bytes;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        snprintf(err, n, "%s: write failed", path);
        remove(tmp);
        tmp[0] = '\0';
        return RDA_STATUS_IO_ERROR;
    }
    /* mkstemp makes the file 0600; give it what a plain fopen would */
    mode_t um = umask(0);
    umask(um);
    chmod(tmp, 0666 & ~um);
    return RDA_STATUS_SUCCESS;
}

rda_status rda_npy_write(const char *path, rda_dtype dtype, int32_t ndim, const int64_t *shape,
                         const void *data, char *err, size_t n) {
    char tmp[4096];
    rda_status st = rda_npy_write_temp(path, dtype, ndim, shape, data, tmp, sizeof tmp, err, n);
    if (st) return st;
    if (rename(tmp, path) != 0) {
        snprintf(err, n, "%s: cannot move the output into place (%s)", path, strerror(errno));
        remove(tmp);
        return RDA_STATUS_IO_ERROR;
    }
    return RDA_STATUS_SUCCESS;
}

/* The canonical form of a path that may not exist yet: its folder's
 * realpath and its last component. */
static int canonical(const char *p, char *out, size_t len) {
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(p, '/'), *base = slash ? slash + 1 : p;
    if (slash) {
        size_t dl = (size_t)(slash - p);
        if (dl >= sizeof dir) return -1;
        memcpy(dir, p, dl);
        dir[dl] = '\0';
        if (dl == 0) strcpy(dir, "/");
    } else {
        strcpy(dir, ".");
    }
    if (!realpath(dir, real)) return -1;
    return (size_t)snprintf(out, len, "%s/%s", real, base) < len ? 0 : -1;
}

int rda_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char ca[PATH_MAX + 256], cb[PATH_MAX + 256];
    if (canonical(a, ca, sizeof ca) || canonical(b, cb, sizeof cb)) return strcmp(a, b) == 0;
    return strcmp(ca, cb) == 0;
}
