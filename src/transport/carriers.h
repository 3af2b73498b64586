// Factories of the carrier implementations (one file each).
#pragma once

#include <memory>

#include "mailroom/transport.h"

namespace mailroom {

std::unique_ptr<Carrier> MakeSmtpCarrier(const CarrierConfig& config, CurlLoop& loop);
Result<std::unique_ptr<Carrier>> MakeFileCarrier(const CarrierConfig& config);

}  // namespace mailroom
