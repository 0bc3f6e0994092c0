// SPDX-License-Identifier: GPL-2.0-or-later
// Whole small files of relinkd's own inside a trusted directory (see
// trusted_dir.h), reached only through the directory's fd: written
// atomically (a fresh temporary file, fsync, rename, fsync of the
// directory), read back only when relinkd's user owns them and nobody else
// may write them, and never past a size bound.
#pragma once

#include <cstddef>
#include <string>

#include "util/result.h"

namespace relink::atomic_file {

// Replaces `name` in `dirfd` with `text`, mode 0600. `shown` names the file
// in messages. A crash leaves the old file or the new one, never a mix.
Result<void> write_at(int dirfd, const std::string& name, const std::string& text, const std::string& shown);

// The contents of `name` in `dirfd`, at most `max` bytes. ENOENT when it is
// missing; EPERM when it is a symlink, not a regular file, or not relinkd's
// alone; EFBIG when it is larger than `max`.
Result<std::string> read_at(int dirfd, const std::string& name, size_t max, const std::string& shown);

// Removes `name`; a missing file is fine.
Result<void> remove_at(int dirfd, const std::string& name, const std::string& shown);

// Renames `name` to `aside`, or to `aside`.1, .2, ... (up to 999), the
// first that does not exist: a file set aside earlier is never replaced.
// Returns the name it now has.
Result<std::string> set_aside_at(int dirfd, const std::string& name, const std::string& aside);

}  // namespace relink::atomic_file
