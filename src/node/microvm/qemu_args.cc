#include "hangar/microvm/qemu_args.h"

#include <fmt/format.h>

namespace hangar::microvm {

std::string GuestCmdline() {
  // panic=-1 + -no-reboot: when envd (PID 1) dies the kernel panics and QEMU exits.
  // init_on_free=1: freed guest pages are zero, so a snapshot (migration) skips them.
  return "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init init_on_free=1";
}

std::vector<std::string> BuildQemuArgs(const VmConfig& c) {
  std::vector<std::string> a = {c.qemu_binary};
  auto add = [&a](std::initializer_list<std::string> xs) { a.insert(a.end(), xs); };
  add({"-M", "pc"});
  if (c.kvm) {
    add({"-accel", "kvm", "-cpu", "host"});
  } else {
    add({"-accel", fmt::format("tcg,tb-size={}", c.tcg_tb_mb), "-cpu", "max"});
  }
  add({"-m", fmt::format("{}M", c.memory_mb), "-smp", std::to_string(c.vcpus)});
  add({"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"});
  add({"-kernel", c.kernel, "-initrd", c.initrd, "-append", c.cmdline});
  // Appended (O_APPEND), so the driver can cut an oversized console back while QEMU writes.
  std::string console_path;
  for (char ch : c.console_log) console_path += ch == ',' ? std::string(",,") : std::string(1, ch);
  add({"-chardev", "file,id=console,append=on,path=" + console_path, "-serial", "chardev:console"});
  add({"-qmp", fmt::format("unix:{},server=on,wait=off", c.qmp_socket)});
  add({"-daemonize", "-pidfile", c.pid_file});
  std::string drive = fmt::format(
      "file={},if=none,id=root,format=qcow2,cache=writeback,discard=unmap,detect-zeroes=unmap",
      c.disk);
  const DriveThrottle& t = c.throttle;
  if (t.read_iops > 0) drive += fmt::format(",throttling.iops-read={}", t.read_iops);
  if (t.write_iops > 0) drive += fmt::format(",throttling.iops-write={}", t.write_iops);
  if (t.read_bps > 0) drive += fmt::format(",throttling.bps-read={}", t.read_bps);
  if (t.write_bps > 0) drive += fmt::format(",throttling.bps-write={}", t.write_bps);
  add({"-drive", drive, "-device", "virtio-blk-pci,drive=root,id=rootdev"});
  add({"-netdev",
       fmt::format("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:{}", c.host_port,
                   c.guest_port),
       "-device", "virtio-net-pci,netdev=net0,id=nic0,romfile="});
  // Host entropy for the guest's hwrng (at most 4 KiB/s: the guest cannot drain the host), and
  // a fresh VM generation ID for every QEMU process (a restore included).
  add({"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device",
       "virtio-rng-pci,rng=rng0,id=rng,max-bytes=4096,period=1000"});
  add({"-device", "vmgenid,guid=auto,id=vmgenid"});
  for (const auto& [name, file] : c.fw_cfg) {
    add({"-fw_cfg", fmt::format("name=opt/hangar/{},file={}", name, file)});
  }
  if (!c.incoming.empty()) add({"-incoming", c.incoming});
  return a;
}

}  // namespace hangar::microvm
