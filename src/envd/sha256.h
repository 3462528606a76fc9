// SHA-256 (FIPS 180-4), for envd's signed /files URLs.
//
// Why not OpenSSL: envd is a static PID 1; static libcrypto adds ~5 MB and pulls in dlopen and
// getaddrinfo (which a static glibc binary cannot honour). One well-specified hash is ~80 lines,
// checked against the NIST vectors (sha256_test.cc) and against OpenSSL by the integration
// tests, which sign URLs with OpenSSL. Thread safety: pure function.
#pragma once

#include <string>
#include <string_view>

namespace hangar::envd::internal {

// The 32-byte digest of `data`.
std::string Sha256(std::string_view data);

}  // namespace hangar::envd::internal
