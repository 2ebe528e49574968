# User-space memory per idle connection (PSS, whole process tree): one line per model, median of the passed runs.
# Rendered by report.py; run it again with: gnuplot memory-user.gp
set title "User-space memory per idle connection (PSS, whole process tree)\n{/*0.8 vm, 2026-11-26, full sweep, medians}"
set xlabel "concurrent connections N (log scale)"
set ylabel "bytes per connection (log scale)"
set logscale xy 10
set xtics ('10' 10, '100' 100, '1,000' 1000, '5,000' 5000, '10,000' 10000)
set xrange [6.666666666666667:15000.0]
set grid xtics ytics mytics lc rgb '#dddddd' lw 1
set key outside right top box
set border 3
set tics nomirror
set datafile missing 'NaN'
set format y '%.0s%c'
set terminal svg size 900,520 dynamic enhanced font 'Helvetica,13' background rgb 'white'
set output 'memory-user.svg'
plot 'memory-user.dat' using 1:2 with linespoints lw 2 pt 7 ps 1.1 lc rgb '#1f77b4' title 'evented', 'memory-user.dat' using 1:3 with linespoints lw 2 pt 7 ps 1.1 lc rgb '#ff7f0e' title 'threaded', 'memory-user.dat' using 1:4 with linespoints lw 2 pt 7 ps 1.1 lc rgb '#d62728' title 'forking', 'memory-user.dat' using 1:5 with linespoints lw 2 pt 7 ps 1.1 lc rgb '#2ca02c' title 'asyncio'
set terminal pngcairo size 900,520 enhanced font 'Helvetica,11' background rgb 'white'
set output 'memory-user.png'
replot
