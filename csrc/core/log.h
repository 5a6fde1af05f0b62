// The library's one log sink: a host callback (pd_set_log_callback), stderr by default.
#pragma once

#include "error.h"
#include "policyd.h"

namespace pd {

void log_message(pd_log_level level, const char* msg);

template <typename... Args>
void log(pd_log_level level, const Args&... args) {
  log_message(level, str(args...).c_str());
}

}  // namespace pd
