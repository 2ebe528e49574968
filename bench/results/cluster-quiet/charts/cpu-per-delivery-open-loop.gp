# Server CPU per delivery (latency workload, open loop): one line per model, median of the passed runs.
# Rendered by report.py; run it again with: gnuplot cpu-per-delivery-open-loop.gp
# Each model's points are nudged sideways (x 1.09 per model) so that
# equal values stay visible; cpu-per-delivery-open-loop.dat has the exact N.
set title "Server CPU per delivery (latency workload, open loop)\n{/*0.8 vm, 2026-12-03, full sweep, medians}"
set xlabel "concurrent connections N (log scale; points nudged sideways so none hides another)"
set ylabel "µs of CPU per delivery (log scale)"
set logscale xy 10
set xtics ('1,000' 1000, '10,000' 10000)
set xrange [526:1.9e+04]
set yrange [2.659:8.591]
set ytics ('3' 3, '4' 4, '5' 5, '6' 6, '7' 7, '8' 8)
set grid xtics ytics mytics lc rgb '#dddddd' lw 1
set key outside right top box
set border 3
set tics nomirror
set datafile missing 'NaN'
set terminal svg size 900,520 dynamic enhanced font 'Helvetica,13' background rgb 'white'
set output 'cpu-per-delivery-open-loop.svg'
plot 'cpu-per-delivery-open-loop.dat' using ($1*0.8787):2 with linespoints lw 2 dt 1 pt 7 ps 1.3 lc rgb '#1f77b4' title 'evented', 'cpu-per-delivery-open-loop.dat' using ($1*0.9578):3 with linespoints lw 2 dt (3,3) pt 6 ps 1.3 lc rgb '#1f77b4' title 'evented-x2', 'cpu-per-delivery-open-loop.dat' using ($1*1.0440):4 with linespoints lw 2 dt (14,5) pt 13 ps 1.3 lc rgb '#9467bd' title 'coroutine', 'cpu-per-delivery-open-loop.dat' using ($1*1.1380):5 with linespoints lw 2 dt (3,3) pt 12 ps 1.3 lc rgb '#9467bd' title 'coroutine-x2'
set terminal pngcairo size 900,520 enhanced font 'Helvetica,11' background rgb 'white'
set output 'cpu-per-delivery-open-loop.png'
replot
