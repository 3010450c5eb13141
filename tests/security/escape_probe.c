/* Attacks of issue 9 (rows 4, 5, 6, 8), each reported as "name=errno" (0: it worked).
 * Built static at test time and pushed into a busybox container; harmless if an attack
 * works: it only opens, reads sizes or pushes nothing into a terminal of its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

static void report(const char *name, long ret) { printf("%s=%d\n", name, ret < 0 ? errno : 0); }

/* name_to_handle_at on PATH, then open_by_handle_at with that handle and with a forged one
 * (TYPE/ID: the host's root, what "shocker" brute-forces) through a fd of PATH's mount. */
static void by_handle(const char *tag, const char *path, int type, const void *id, size_t len) {
    struct file_handle *h = malloc(sizeof(*h) + 128);
    int mount_id, mfd = open(path, O_RDONLY | O_NOCTTY), fd;
    char name[64];
    h->handle_bytes = 128;
    snprintf(name, sizeof name, "%s_name_to_handle", tag);
    report(name, name_to_handle_at(AT_FDCWD, path, h, &mount_id, 0));
    snprintf(name, sizeof name, "%s_open_own_handle", tag);
    report(name, fd = open_by_handle_at(mfd, h, O_RDONLY));
    if (fd >= 0) close(fd);
    h->handle_type = type;
    h->handle_bytes = len;
    memcpy(h->f_handle, id, len);
    snprintf(name, sizeof name, "%s_open_forged_handle", tag);
    report(name, fd = open_by_handle_at(mfd, h, O_RDONLY));
    if (fd >= 0) close(fd);
    free(h);
}

int main(void) {
    unsigned int ext4_root[2] = {2, 0};                  /* FILEID_INO32_GEN: inode 2 = "/" */
    unsigned long long kernfs_root = 1;                 /* FILEID_KERNFS: id of the root node */
    int master, slave;
    char c = 'x';
    by_handle("console", "/dev/console", 1, ext4_root, sizeof ext4_root);
    by_handle("cgroup", "/sys/fs/cgroup", 0xfe, &kernfs_root, sizeof kernfs_root);
    report("syslog_size_unread", klogctl(9, NULL, 0));  /* needs CAP_SYSLOG always */
    report("keyctl_user_keyring", syscall(SYS_keyctl, 0 /*GET_KEYRING_ID*/, -4 /*USER*/, 0));
    report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -2 /*PROCESS*/));
    master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    unlockpt(master);
    slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    report("tiocsti", ioctl(slave, TIOCSTI, &c));
    return 0;
}
