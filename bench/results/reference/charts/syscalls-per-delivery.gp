# Server system calls per delivery (throughput workload, closed loop): one line per model, median of the passed runs.
# Rendered by report.py; run it again with: gnuplot syscalls-per-delivery.gp
# Each model's points are nudged sideways (x 1.09 per model) so that
# equal values stay visible; syscalls-per-delivery.dat has the exact N.
set title "Server system calls per delivery (throughput workload, closed loop)\n{/*0.8 vm, 2026-12-03, full sweep, medians}"
set xlabel "concurrent connections N (log scale; points nudged sideways so none hides another)"
set ylabel "system calls per delivery (log scale)"
set logscale xy 10
set xtics ('10' 10, '100' 100, '1,000' 1000, '5,000' 5000, '10,000' 10000)
set xrange [5.04:1.98e+04]
set yrange [0.001052:1.578]
set ytics ('0.01' 0.01, '0.1' 0.1, '1' 1)
set grid xtics ytics mytics lc rgb '#dddddd' lw 1
set key outside right top box
set border 3
set tics nomirror
set datafile missing 'NaN'
set terminal svg size 900,520 dynamic enhanced font 'Helvetica,13' background rgb 'white'
set output 'syscalls-per-delivery.svg'
plot 'syscalls-per-delivery.dat' using ($1*0.8417):2 with linespoints lw 2 dt 1 pt 7 ps 1.3 lc rgb '#1f77b4' title 'evented', 'syscalls-per-delivery.dat' using ($1*0.9174):3 with linespoints lw 2 dt 2 pt 5 ps 1.3 lc rgb '#ff7f0e' title 'threaded', 'syscalls-per-delivery.dat' using ($1*1.0000):4 with linespoints lw 2 dt 4 pt 9 ps 1.3 lc rgb '#d62728' title 'forking', 'syscalls-per-delivery.dat' using ($1*1.0900):5 with linespoints lw 2 dt (14,5) pt 13 ps 1.3 lc rgb '#9467bd' title 'coroutine', 'syscalls-per-delivery.dat' using ($1*1.1881):6 with linespoints lw 2 dt 5 pt 11 ps 1.3 lc rgb '#2ca02c' title 'asyncio'
set terminal pngcairo size 900,520 enhanced font 'Helvetica,11' background rgb 'white'
set output 'syscalls-per-delivery.png'
replot
