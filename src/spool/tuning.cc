#include "spool/tuning.h"

#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>

#include "spool/counter_merge.h"

namespace mailroom {

rocksdb::ColumnFamilyOptions FamilyOptions(const std::string& name, const SpoolConfig& config,
                                           const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions cf;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.cache_index_and_filter_blocks = true;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.compression = rocksdb::kLZ4Compression;
  if (name == "default") {
    cf.merge_operator = NewCounterMergeOperator();
    // Counters take a merge per commit; folding them as they come keeps
    // reading one (Stats, many times a second) from walking thousands.
    cf.max_successive_merges = 32;
  }
  if (name == "bodies") {
    // Whole messages, written once: keep large values out of the LSM so
    // compaction rewrites keys, not bodies.
    cf.enable_blob_files = true;
    cf.min_blob_size = config.blob_min_bytes;
    cf.blob_compression_type = rocksdb::kLZ4Compression;
    cf.enable_blob_garbage_collection = true;
    cf.write_buffer_size = 64 << 20;
    // Bursts of large jobs fill a memtable faster than one flushes: more
    // memtables in hand instead of stopping writes (RocksDB's default is 2).
    cf.max_write_buffer_number = 4;
  }
  if (name == "bodies" || name == "jobs") {
    // Lookups that mostly miss: ingest's dedupe of new jobs (bodies), and
    // the stored record of a job no outcome has changed yet (jobs). A
    // memtable bloom filter answers those without searching the skiplist.
    cf.memtable_whole_key_filtering = true;
    cf.memtable_prefix_bloom_size_ratio = 0.02;
  }
  return cf;
}

}  // namespace mailroom
