/*
 * Secret arguments for a server that takes its secrets only on its command line (tritonserver 2.51's
 * --http-restricted-api and --grpc-restricted-protocol keys).
 *
 * Every local user can read a process's command line (/proc/PID/cmdline, ps). Preloaded into the server, this
 * library appends the NUL-separated arguments of the file named by MFN_SECRET_ARGS_FILE to argv before main
 * runs: the kernel's copy of the command line, which is what other users see, never holds them; they live in
 * the process's heap, readable only by its own user. The file is read, then unlinked.
 *
 * Fails closed: a server that cannot read its secret arguments exits (status 70) rather than starting with
 * APIs open. The library and MFN_SECRET_ARGS_FILE are removed from the environment before main, so the
 * processes the server starts (Triton's Python stubs) neither load it nor see the file's name.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARGS_FILE_VARIABLE "MFN_SECRET_ARGS_FILE"
#define LIBRARY_MARK "libmfn_secret_args"
#define MAX_ARGS_BYTES (1 << 20)
#define FAILED 70

typedef int (*main_function)(int, char **, char **);
typedef int (*start_function)(main_function, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);

static void fail(const char *what, const char *path) {
    fprintf(stderr, "mfn: cannot read the server's secret arguments from %s (%s): %s\n", path, what, strerror(errno));
    _exit(FAILED);
}

/* Reads the whole file; its owner alone may read it, or it may be someone else's planted file. */
static char *read_args(const char *path, size_t *length) {
    int descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (descriptor < 0) fail("open", path);
    struct stat status;
    if (fstat(descriptor, &status) != 0) fail("stat", path);
    if (status.st_uid != geteuid() || (status.st_mode & 077) != 0 || status.st_size > MAX_ARGS_BYTES) {
        errno = EPERM;
        fail("it must be this user's, mode 0600, under 1 MiB", path);
    }
    char *buffer = malloc((size_t)status.st_size + 1);
    if (buffer == NULL) fail("memory", path);
    size_t total = 0;
    while (total < (size_t)status.st_size) {
        ssize_t got = read(descriptor, buffer + total, (size_t)status.st_size - total);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) fail("read", path);
        total += (size_t)got;
    }
    close(descriptor);
    buffer[total] = '\0';
    *length = total;
    return buffer;
}

/* LD_PRELOAD without this library (a user's own preloads stay for the server's children). */
static void forget_preload(void) {
    const char *preload = getenv("LD_PRELOAD");
    if (preload == NULL) return;
    char *kept = calloc(strlen(preload) + 1, 1);
    char *copy = strdup(preload);
    if (kept == NULL || copy == NULL) {
        unsetenv("LD_PRELOAD");
        return;
    }
    char *saved = NULL;
    for (char *entry = strtok_r(copy, ": ", &saved); entry != NULL; entry = strtok_r(NULL, ": ", &saved)) {
        if (strstr(entry, LIBRARY_MARK) != NULL) continue;
        if (kept[0] != '\0') strcat(kept, ":");
        strcat(kept, entry);
    }
    if (kept[0] == '\0') unsetenv("LD_PRELOAD");
    else setenv("LD_PRELOAD", kept, 1);
    free(copy);
    free(kept);
}

int __libc_start_main(main_function main, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end) {
    start_function start = (start_function)dlsym(RTLD_NEXT, "__libc_start_main");
    const char *variable = getenv(ARGS_FILE_VARIABLE);
    if (variable == NULL) return start(main, argc, argv, init, fini, rtld_fini, stack_end);
    char *path = strdup(variable);
    if (path == NULL) fail("memory", variable);
    size_t length = 0;
    char *args = read_args(path, &length);
    unlink(path);
    unsetenv(ARGS_FILE_VARIABLE);
    forget_preload();

    int extra = 0;
    for (size_t index = 0; index < length; index++) extra += args[index] == '\0';
    size_t variables = 0;
    while (environ[variables] != NULL) variables++;
    /* glibc finds the environment right after argv's NULL (environ = &argv[argc + 1]), so the new argv carries
       the environment as it is now, without the entries removed above. */
    char **combined = calloc((size_t)argc + (size_t)extra + 1 + variables + 1, sizeof(char *));
    if (combined == NULL) fail("memory", path);
    for (int index = 0; index < argc; index++) combined[index] = argv[index];
    char *cursor = args;
    for (int index = 0; index < extra; index++) {
        combined[argc + index] = cursor;
        cursor += strlen(cursor) + 1;
    }
    for (size_t index = 0; index < variables; index++) combined[argc + extra + 1 + index] = environ[index];
    free(path);
    return start(main, argc + extra, combined, init, fini, rtld_fini, stack_end);
}
