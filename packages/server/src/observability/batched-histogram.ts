import type { Registry } from "prom-client";

/**
 * A Prometheus histogram with one label whose observations cost no allocation: each
 * label value's series is a fixed array of bucket counts that `observe` adds to (a
 * linear scan of ~12 bounds). prom-client's own Histogram builds a label object and a
 * hash string on every observation, too much for a per-token path; this one registers
 * in a prom-client Registry as a custom metric and is formatted at scrape time.
 */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > (b[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += v;
    this.count++;
  }
}

interface Value {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
}

export class BatchedHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly name: string;
  readonly help: string;
  private readonly label: string;
  private readonly bounds: readonly number[];
  private readonly series = new Map<string, HistogramSeries>();

  constructor(opts: { name: string; help: string; label: string; buckets: number[]; registers: Registry[] }) {
    this.name = opts.name;
    this.help = opts.help;
    this.label = opts.label;
    this.bounds = [...opts.buckets].sort((a, b) => a - b);
    for (const r of opts.registers) r.registerMetric(this as never);
  }

  /** The series of one label value (create once, keep, observe many times). */
  labels(value: string): HistogramSeries {
    let s = this.series.get(value);
    if (!s) {
      s = new HistogramSeries(this.bounds);
      this.series.set(value, s);
    }
    return s;
  }

  reset(): void {
    this.series.clear();
  }

  /** prom-client's metric shape: `_bucket` (cumulative, with `le`), `_sum`, `_count` per label value. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Value[] }> {
    const values: Value[] = [];
    for (const [lv, s] of this.series) {
      let cum = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cum += s.counts[i] as number;
        const le = i < this.bounds.length ? (this.bounds[i] as number) : "+Inf";
        values.push({ labels: { le, [this.label]: lv }, value: cum, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { [this.label]: lv }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { [this.label]: lv }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
