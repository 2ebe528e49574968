/* The log-linear histogram of histogram.h. A bucket index is the value's
 * octave (how far its top bit is above the linear range) times 128 plus its
 * next 7 bits: the same arithmetic HdrHistogram uses, for one fixed range. */
#include "histogram.h"

#include <string.h>

static unsigned bucket_of(uint64_t value) {
  const uint64_t largest = (UINT64_C(1) << HISTOGRAM_MAX_BITS) - 1;
  if (value > largest)
    value = largest;
  if (value < HISTOGRAM_LINEAR)
    return (unsigned)value;
  unsigned top_bit = 63u - (unsigned)__builtin_clzll(value);
  unsigned shift = top_bit - HISTOGRAM_SUB_BITS;
  return (shift << HISTOGRAM_SUB_BITS) + (unsigned)(value >> shift);
}

/* The largest value that falls into bucket `index`. */
static uint64_t bucket_top(unsigned index) {
  if (index < HISTOGRAM_LINEAR)
    return index;
  unsigned shift = (index >> HISTOGRAM_SUB_BITS) - 1;
  uint64_t step = (index & ((1u << HISTOGRAM_SUB_BITS) - 1)) +
                  (UINT64_C(1) << HISTOGRAM_SUB_BITS);
  return ((step + 1) << shift) - 1;
}

void histogram_reset(struct histogram *h) {
  memset(h, 0, sizeof *h);
}

void histogram_record(struct histogram *h, uint64_t microseconds) {
  h->counts[bucket_of(microseconds)]++;
  h->total++;
  h->sum += microseconds;
  if (microseconds > h->max)
    h->max = microseconds;
}

uint64_t histogram_percentile(const struct histogram *h, double fraction) {
  if (h->total == 0)
    return 0;
  uint64_t rank = (uint64_t)(fraction * (double)h->total + 0.999999);
  if (rank < 1)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) {
      uint64_t top = bucket_top(i);
      return top < h->max ? top : h->max;
    }
  }
  return h->max;
}

void histogram_print_json(const struct histogram *h, FILE *out) {
  double mean = h->total ? (double)h->sum / (double)h->total : 0.0;
  fprintf(out,
          "{\"count\":%llu,\"mean\":%.1f,\"p50\":%llu,\"p90\":%llu,"
          "\"p99\":%llu,\"p999\":%llu,\"max\":%llu}",
          (unsigned long long)h->total, mean,
          (unsigned long long)histogram_percentile(h, 0.50),
          (unsigned long long)histogram_percentile(h, 0.90),
          (unsigned long long)histogram_percentile(h, 0.99),
          (unsigned long long)histogram_percentile(h, 0.999),
          (unsigned long long)h->max);
}
