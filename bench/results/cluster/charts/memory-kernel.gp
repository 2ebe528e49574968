# Kernel memory per idle connection (stacks + page tables + Slab): one line per model, median of the passed runs.
# Rendered by report.py; run it again with: gnuplot memory-kernel.gp
# Each model's points are nudged sideways (x 1.09 per model) so that
# equal values stay visible; memory-kernel.dat has the exact N.
set title "Kernel memory per idle connection (stacks + page tables + Slab)\n{/*0.8 vm, 2026-12-03, full sweep, medians}"
set xlabel "concurrent connections N (log scale; points nudged sideways so none hides another)"
set ylabel "KiB per connection (log scale)"
set logscale xy 10
set xtics ('1,000' 1000, '10,000' 10000)
set xrange [443:2.26e+04]
set yrange [4.597:169.9]
set ytics ('5' 5, '10' 10, '20' 20, '50' 50, '100' 100)
set grid xtics ytics mytics lc rgb '#dddddd' lw 1
set key outside right top box
set border 3
set tics nomirror
set datafile missing 'NaN'
set terminal svg size 900,520 dynamic enhanced font 'Helvetica,13' background rgb 'white'
set output 'memory-kernel.svg'
plot 'memory-kernel.dat' using ($1*0.7396):2 with linespoints lw 2 dt 1 pt 7 ps 1.3 lc rgb '#1f77b4' title 'evented', 'memory-kernel.dat' using ($1*0.8062):3 with linespoints lw 2 dt (3,3) pt 6 ps 1.3 lc rgb '#1f77b4' title 'evented-x2', 'memory-kernel.dat' using ($1*0.8787):4 with linespoints lw 2 dt (14,5) pt 13 ps 1.3 lc rgb '#9467bd' title 'coroutine', 'memory-kernel.dat' using ($1*0.9578):5 with linespoints lw 2 dt (3,3) pt 12 ps 1.3 lc rgb '#9467bd' title 'coroutine-x2', 'memory-kernel.dat' using ($1*1.0440):6 with linespoints lw 2 dt 2 pt 5 ps 1.3 lc rgb '#ff7f0e' title 'threaded', 'memory-kernel.dat' using ($1*1.1380):7 with linespoints lw 2 dt (3,3) pt 4 ps 1.3 lc rgb '#ff7f0e' title 'threaded-x2', 'memory-kernel.dat' using ($1*1.2404):8 with linespoints lw 2 dt 4 pt 9 ps 1.3 lc rgb '#d62728' title 'forking', 'memory-kernel.dat' using ($1*1.3520):9 with linespoints lw 2 dt (3,3) pt 8 ps 1.3 lc rgb '#d62728' title 'forking-x2'
set terminal pngcairo size 900,520 enhanced font 'Helvetica,11' background rgb 'white'
set output 'memory-kernel.png'
replot
