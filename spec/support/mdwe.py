# Runs a command under the kernel's memory-deny-write-execute rule (prctl PR_SET_MDWE, Linux
# 6.3+), which the systemd unit's MemoryDenyWriteExecute=yes also enforces: no mapping may be
# both writable and executable, or become executable later. Exit 77 when the kernel lacks it.
#   /usr/bin/python3 spec/support/mdwe.py PROGRAM ARGS...
import ctypes
import os
import sys

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.stderr.write("mdwe: PR_SET_MDWE: %s\n" % os.strerror(ctypes.get_errno()))
    sys.exit(77)
# The rule holds here too: a writable and executable mapping is refused.
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
p = libc.mmap(None, 4096, 7, 0x22, -1, 0)
if p not in (None, ctypes.c_void_p(-1).value):
    sys.stderr.write("mdwe: the rule is not enforced\n")
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
