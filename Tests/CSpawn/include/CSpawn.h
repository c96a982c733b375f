#ifndef CSPAWN_H
#define CSPAWN_H

#include <spawn.h>

// glibc's GNU extensions for posix_spawn, which Swift's Glibc module does not show (it is
// built without _GNU_SOURCE). The test support's ChildProcess needs them.

/// pipe2(fds, O_CLOEXEC).
int cspawn_pipe_cloexec(int fds[2]);
/// posix_spawn_file_actions_addclosefrom_np: close every descriptor from `from` up.
int cspawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);
/// posix_spawn_file_actions_addchdir_np: run the child in `directory`.
int cspawn_addchdir(posix_spawn_file_actions_t *actions, const char *directory);

#endif
