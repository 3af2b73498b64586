// RocksDB options for each of the spool's column families.
#pragma once

#include <rocksdb/cache.h>
#include <rocksdb/options.h>

#include <memory>
#include <string>

#include "mailroom/config.h"

namespace mailroom {

rocksdb::ColumnFamilyOptions FamilyOptions(const std::string& name, const SpoolConfig& config,
                                           const std::shared_ptr<rocksdb::Cache>& cache);

}  // namespace mailroom
