"""Every input format: Kaggle CSV (csvfile, csvparse, csvdialect, archive for compressed and
zipped files), image folders and zips (imagefolder, imagedecode, png28, preprocess, ink,
imagepack, imagezip), the sources that plan and read chunks (sources, csvsource,
imagesources), prediction outputs as CSV text (csvout) and the bundled sample (samples)."""
