// Random identifiers and secrets from the kernel's CSPRNG (getrandom(2)): API keys, tokens,
// sandbox ids, temporary names. One source for all of them, so none is ever drawn from a
// seeded PRNG a tenant could predict. Thread safety: safe from any thread.
#pragma once

#include <cstddef>
#include <string>

namespace hangar {

// `bytes` random bytes as 2 × `bytes` lower-case hex digits.
std::string RandomHex(size_t bytes);

}  // namespace hangar
