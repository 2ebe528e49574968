/* A log-linear histogram of durations in microseconds, laid out like
 * HdrHistogram: values below 256 us get a bucket each, and every power of two
 * above is cut into 128 equal steps, so any recorded value is known to within
 * 1/128 (under 0.8 %) from 1 us to years, in a fixed 40 KiB. Recording is one
 * count-leading-zeros and one increment: cheap enough for every delivery.
 *
 * Loopback latencies are microseconds and their tail is milliseconds; a
 * histogram with fixed-width buckets or one that averages would hide one or
 * the other. */
#ifndef CHAT_BENCH_HISTOGRAM_H
#define CHAT_BENCH_HISTOGRAM_H

#include <stdint.h>
#include <stdio.h>

#define HISTOGRAM_SUB_BITS 7                        /* 128 steps per octave */
#define HISTOGRAM_LINEAR (2u << HISTOGRAM_SUB_BITS) /* exact below 256 us */
#define HISTOGRAM_MAX_BITS 46                       /* values up to ~2 years */
#define HISTOGRAM_BUCKETS                                                      \
  ((HISTOGRAM_MAX_BITS - HISTOGRAM_SUB_BITS) << HISTOGRAM_SUB_BITS)

struct histogram {
  uint64_t counts[HISTOGRAM_BUCKETS];
  uint64_t total; /* values recorded */
  uint64_t sum;   /* of all values, for the mean */
  uint64_t max;   /* exact, not rounded to a bucket */
};

void histogram_reset(struct histogram *h);
void histogram_record(struct histogram *h, uint64_t microseconds);

/* The smallest value v such that at least `fraction` of the recorded values
 * are <= v, to the histogram's precision (never above the exact maximum).
 * 0 when nothing was recorded. */
uint64_t histogram_percentile(const struct histogram *h, double fraction);

/* {"count":..,"mean":..,"p50":..,"p90":..,"p99":..,"p999":..,"max":..}, in us
 */
void histogram_print_json(const struct histogram *h, FILE *out);

#endif
