//! The target of a write or a grow: one identity (an O_PATH descriptor, fstat), the checks that refuse
//! the wrong disk, descriptors reopened from it, its lock; Linux block-device ioctls, sysfs and mounts;
//! page-aligned buffers for O_DIRECT; and the progress events work on a target reports. Shared by
//! `write` and `grow`, which import nothing from each other's internals.

pub mod blockdev;
pub mod buffers;
pub mod lock;
pub mod progress;
pub mod target;
