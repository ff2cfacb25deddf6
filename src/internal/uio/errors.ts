// errno → typed error (native-transport.md §4.5).
import { ChannelClosed, OpenRejected, TransportError } from "../../VmbusError.js"
import { Errno } from "./native.js"

export const openError = (path: string, errno: number): TransportError | OpenRejected => {
  switch (errno) {
    case Errno.ENOENT:
    case Errno.ENODEV:
      return new TransportError({ reason: "NotFound", detail: `${path}: no such device (gone or rescinded)`, errno })
    case Errno.EACCES:
    case Errno.EPERM:
      return new TransportError({
        reason: "PermissionDenied",
        detail: `${path}: permission denied (the node is root:root 0600 unless a udev rule says otherwise)`,
        errno
      })
    case Errno.EAGAIN:
      return new OpenRejected({ status: -1, reason: "the host refused OPENCHANNEL (the kernel does not pass its status on)" })
    case Errno.EDQUOT:
      return new OpenRejected({ status: -1, reason: "the host refused the ring GPADL" })
    case Errno.EBUSY:
      return new TransportError({ reason: "Busy", detail: `${path}: busy`, errno })
    default:
      return new TransportError({ reason: "Unknown", detail: `${path}: open failed with errno ${errno}`, errno })
  }
}

export const lockError = (path: string, errno: number): TransportError =>
  errno === Errno.EAGAIN
    ? new TransportError({ reason: "Busy", detail: `${path} is open in another process (exclusive lock held)`, errno })
    : new TransportError({ reason: "Unknown", detail: `${path}: flock failed with errno ${errno}`, errno })

export const mapError = (what: string, errno: number): TransportError | ChannelClosed => {
  if (errno === Errno.ENODEV) return new ChannelClosed({ reason: "Rescinded" })
  if (errno === Errno.EINVAL) {
    return new TransportError({
      reason: "InvalidData",
      detail: `${what}: the device refused the mapping (its size disagrees with sysfs)`,
      errno
    })
  }
  if (errno === Errno.EACCES || errno === Errno.EPERM) {
    return new TransportError({ reason: "PermissionDenied", detail: `${what}: permission denied`, errno })
  }
  return new TransportError({ reason: "Unknown", detail: `${what}: mmap failed with errno ${errno}`, errno })
}

/** What a failed read or write on the device fd means: the device is gone, or nothing new. */
export const fdGone = (result: number): boolean =>
  result === 0 || result === -Errno.EIO || result === -Errno.EINVAL || result === -Errno.EBADF ||
  result === -Errno.ENODEV
