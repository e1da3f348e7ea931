/*
 * kiln's init for fast-path step containers (worker/src/init.rs says why it exists).
 *
 * Without arguments it is the container's entry process: it idles and reaps the orphans that
 * step commands leave, as PID 1 must. With `-- COMMAND [ARG...]` it is how the step's command
 * is run (through `exec`): it runs COMMAND (looked up in PATH, as the engine would) and waits
 * for it, then kills every other process in the container, as the end of a classic container's
 * PID 1 does, and exits with the command's status (128 + signal if a signal ended it, as the
 * engine reports a container's).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static _Noreturn void idle(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    /* Queue SIGCHLD instead of dropping it, and sleep until one arrives. */
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        int sig;
        sigwait(&set, &sig);
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
    }
}

static int run(char **argv) {
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "kiln init: cannot start %s: %s\n", argv[0], strerror(errno));
        return 126;
    }
    if (child == 0) {
        execvp(argv[0], argv);
        int code = errno == ENOENT ? 127 : 126;
        fprintf(stderr, "exec: \"%s\": %s\n", argv[0],
                errno == ENOENT ? "executable file not found in $PATH" : strerror(errno));
        _exit(code);
    }
    int status;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) {
            return 126;
        }
    }
    /* Every process this one may signal but PID 1 and itself: what the command left behind. */
    kill(-1, SIGKILL);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "--") == 0) {
        return run(argv + 2);
    }
    idle();
}
