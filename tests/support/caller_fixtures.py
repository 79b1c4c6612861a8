"""VCFs in the layouts of the long-read callers: Clair3 (VCF and gVCF with `<NON_REF>`),
DeepVariant (gVCF with `<*>`, `RefCall`/`LowQual`/`NoCall`), medaka (GT:GQ, depth in INFO/DP,
haploid calls). Header lines follow what each tool writes; each record carries the dosage the
reader must give at the panel site beside it (NaN: missing) and the reason when missing."""

from __future__ import annotations

from pathlib import Path

from support.vcftools import CHR22_GRCH38, write_vcf

NAN = float("nan")
COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tSAMPLE"
CONTIG = f"##contig=<ID=chr22,length={CHR22_GRCH38}>"
PL_DESC = "Phred-scaled genotype likelihoods rounded to the closest integer"
DV_LOWQUAL = "Confidence in this variant being real is below calling threshold."
MED_DP = "Median DP observed within the GVCF block rounded to the nearest integer."
SR = ("Depth of spanning reads by strand which best align to each allele "
      "(ref fwd, ref rev, alt1 fwd, alt1 rev, etc.)")
AR = ("Depth of ambiguous spanning reads by strand which align equally well to all alleles "
      "(fwd, rev)")

CLAIR3_HEADER = f"""##fileformat=VCFv4.2
##source=Clair3
##clair3_version=1.0.10
##cmdline=run_clair3.sh --bam_fn=sample.bam --ref_fn=ref.fa --platform=ont --gvcf
##reference=ref.fa
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=LowQual,Description="Low quality variant">
##FILTER=<ID=RefCall,Description="Reference call">
##INFO=<ID=P,Number=0,Type=Flag,Description="Result from pileup calling">
##INFO=<ID=F,Number=0,Type=Flag,Description="Result from full-alignment calling">
##INFO=<ID=END,Number=1,Type=Integer,Description="End position (for use with symbolic alleles)">
##ALT=<ID=NON_REF,Description="Represents any possible alternative allele at this location">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype Quality">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read Depth">
##FORMAT=<ID=MIN_DP,Number=1,Type=Integer,Description="Minimum DP observed within the GVCF block.">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Read depth for each allele">
##FORMAT=<ID=AF,Number=1,Type=Float,Description="Estimated allele frequency in the read data">
##FORMAT=<ID=PL,Number=G,Type=Integer,Description="{PL_DESC}">
{CONTIG}
{COLUMNS}"""

DEEPVARIANT_HEADER = f"""##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=RefCall,Description="Genotyping model thinks this site is reference.">
##FILTER=<ID=LowQual,Description="{DV_LOWQUAL}">
##FILTER=<ID=NoCall,Description="Site has depth=0 resulting in no call.">
##INFO=<ID=END,Number=1,Type=Integer,Description="End position (for use with symbolic alleles)">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Conditional genotype quality">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">
##FORMAT=<ID=MIN_DP,Number=1,Type=Integer,Description="Minimum DP observed within the GVCF block.">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Read depth for each allele">
##FORMAT=<ID=VAF,Number=A,Type=Float,Description="Variant allele fractions.">
##FORMAT=<ID=PL,Number=G,Type=Integer,Description="{PL_DESC}">
##FORMAT=<ID=MED_DP,Number=1,Type=Integer,Description="{MED_DP}">
##DeepVariant_version=1.6.1
{CONTIG}
{COLUMNS}"""

MEDAKA_HEADER = f"""##fileformat=VCFv4.1
##medaka_version=1.11.3
{CONTIG}
##FILTER=<ID=PASS,Description="All filters passed">
##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth of reads at pos">
##INFO=<ID=DPS,Number=2,Type=Integer,Description="Depth of reads at pos by strand (fwd, rev)">
##INFO=<ID=DPSP,Number=1,Type=Integer,Description="Depth of reads spanning pos +-25">
##INFO=<ID=SR,Number=.,Type=Integer,Description="{SR}">
##INFO=<ID=AR,Number=2,Type=Integer,Description="{AR}">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Medaka genotype">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Medaka genotype quality score">
{COLUMNS}"""

# (VCF line, panel site (pos, ref, alt), dosage, missing reason or None) per caller.
Case = tuple[str | None, tuple[int, str, str] | None, float, str | None]

CLAIR3_GVCF: list[Case] = [
    ("chr22\t1\t.\tN\t<NON_REF>\t0\t.\tEND=999\tGT:GQ:MIN_DP:PL\t0/0:50:20:0,60,600",
     (500, "C", "T"), 0.0, None),
    ("chr22\t1000\t.\tA\tG,<NON_REF>\t20.5\tPASS\tF\tGT:GQ:DP:AD:AF:PL\t0/1:20:30:15,15,0:0.5:20,0,30,40,50,60",
     (1000, "A", "G"), 1.0, None),
    ("chr22\t1001\t.\tT\t<NON_REF>\t0\t.\tEND=1099\tGT:GQ:MIN_DP:PL\t0/0:50:20:0,60,600",
     (1050, "C", "G"), 0.0, None),
    (None, (1060, "A", "AT"), NAN, "indel_without_record"),  # a block says nothing of indels
    ("chr22\t1100\t.\tC\tT,<NON_REF>\t3.1\tRefCall\tP\tGT:GQ:DP:AD:AF:PL\t0/0:9:28:27,1,0:0.03:0,9,90,30,99,99",
     (1100, "C", "T"), 0.0, None),
    ("chr22\t1200\t.\tG\tA,<NON_REF>\t1.5\tLowQual\tP\tGT:GQ:DP:AD:AF:PL\t1/1:2:6:3,3,0:0.5:2,3,0,9,9,9",
     (1200, "G", "A"), NAN, "filtered"),
    ("chr22\t1300\t.\tA\tC,T,<NON_REF>\t15\tPASS\tF\tGT:GQ:DP:AD:AF:PL\t1/2:15:22:0,11,11,0:0.5:1,2,3,4,5,6,7,8,9,10",
     (1300, "A", "T"), 1.0, None),
    ("chr22\t1301\t.\tG\t<NON_REF>\t0\t.\tEND=1499\tGT:GQ:MIN_DP:PL\t0/0:3:2:0,3,30",
     (1400, "G", "A"), 0.0, None),  # low GQ/depth: kept without thresholds
    ("chr22\t1800\t.\tG\t<NON_REF>\t0\t.\t.\tGT:GQ:MIN_DP:PL\t0/0:40:20:0,40,400",
     (1800, "G", "T"), 0.0, None),  # one-base reference record at the site [11]
    ("chr22\t1900\t.\tT\t<NON_REF>\t0\t.\t.\tGT:GQ:MIN_DP:PL\t0/1:40:20:0,40,400",
     (1900, "T", "C"), NAN, "no_call"),  # <NON_REF> in the GT might be the panel ALT
    (None, (2500, "A", "G"), NAN, "no_coverage"),  # a gVCF covers what was callable
]

DEEPVARIANT_GVCF: list[Case] = [
    ("chr22\t1\t.\tA\t<*>\t0\t.\tEND=1999\tGT:GQ:MIN_DP:PL\t0/0:50:25:0,75,749",
     (1500, "T", "G"), 0.0, None),
    ("chr22\t2000\t.\tA\tG,<*>\t38.2\tPASS\t.\tGT:GQ:DP:AD:VAF:PL\t1/1:35:31:0,31,0:1,0:38,36,0,990,990,990",
     (2000, "A", "G"), 2.0, None),
    ("chr22\t2100\t.\tC\tT,<*>\t0\tRefCall\t.\tGT:GQ:DP:AD:VAF:PL\t0/0:22:30:25,5,0:0.16,0:0,22,35,990,990,990",
     (2100, "C", "T"), 0.0, None),
    ("chr22\t2200\t.\tG\tA,<*>\t0\tRefCall\t.\tGT:GQ:DP:AD:VAF:PL\t./.:8:25:20,5,0:0.2,0:0,8,30,990,990,990",
     (2200, "G", "A"), NAN, "no_call"),
    ("chr22\t2300\t.\tT\tC,<*>\t1.2\tLowQual\t.\tGT:GQ:DP:AD:VAF:PL\t0/1:3:18:12,6,0:0.33,0:1,0,24,990,990,990",
     (2300, "T", "C"), NAN, "filtered"),
    ("chr22\t2400\t.\tA\t<*>\t0\tNoCall\tEND=2499\tGT:GQ:MIN_DP:PL\t./.:0:0:0,0,0",
     (2450, "A", "C"), NAN, "no_coverage"),  # a failed block does not say 0/0
    ("chr22\t2500\t.\tC\tCA,<*>\t30\tPASS\t.\tGT:GQ:DP:AD:VAF:PL\t0/1:30:28:14,14,0:0.5,0:30,0,30,990,990,990",
     (2500, "C", "CA"), 1.0, None),
    ("chr22\t2501\t.\tA\t<*>\t0\t.\tEND=2999\tGT:GQ:MIN_DP:PL\t0/0:50:5:0,50,500",
     (2800, "A", "T"), 0.0, None),  # MIN_DP 5: dropped by --min-dp 10
]

MEDAKA_VCF: list[Case] = [
    ("chr22\t3000\t.\tA\tG\t35.2\tPASS\tDP=30;DPS=15,15;DPSP=30;SR=0,0,15,15;AR=0,0\tGT:GQ\t1/1:35",
     (3000, "A", "G"), 2.0, None),
    ("chr22\t3100\t.\tC\tT\t12.1\tPASS\tDP=5;DPS=3,2;DPSP=5;SR=2,1,1,1;AR=0,0\tGT:GQ\t0/1:12",
     (3100, "C", "T"), 1.0, None),  # INFO/DP 5: dropped by --min-dp 10
    ("chr22\t3200\t.\tG\tT\t22.0\tPASS\tDP=25;DPS=12,13;DPSP=25;SR=0,0,12,13;AR=0,0\tGT:GQ\t1:22",
     (3200, "G", "T"), 1.0, None),  # medaka_haploid_variant writes haploid GTs
    ("chr22\t3300\t.\tA\tC\t3.0\tPASS\tDP=20;DPS=10,10;DPSP=20;SR=9,9,1,1;AR=0,0\tGT:GQ\t0/1:3",
     (3300, "A", "C"), 1.0, None),  # GQ 3: dropped by --min-gq 10
    (None, (3400, "T", "G"), NAN, "absent"),  # variant-only: absent is missing, not 0/0
]

CALLERS = {"clair3.g.vcf.gz": (CLAIR3_HEADER, CLAIR3_GVCF),
           "deepvariant.g.vcf.gz": (DEEPVARIANT_HEADER, DEEPVARIANT_GVCF),
           "medaka.vcf.gz": (MEDAKA_HEADER, MEDAKA_VCF)}


def write_caller_vcf(directory: Path, name: str) -> Path:
    """Write one caller's fixture (bgzipped, indexed) and return its path."""
    header, cases = CALLERS[name]
    lines = [line for line, _, _, _ in cases if line is not None]
    return write_vcf(directory / name, header + "\n" + "\n".join(lines) + "\n")


def panel_tsv(cases: list[Case]) -> str:
    """The fixture's panel in the project's TSV format."""
    rows = [f"chr22\t{pos}\t{ref}\t{alt}\tchr22_{pos}_{ref}_{alt}\t0.3"
            for _, site, _, _ in cases if site is not None for pos, ref, alt in [site]]
    return "#genome_build=GRCh38\nchrom\tpos\tref\talt\tid\taf\n" + "\n".join(rows) + "\n"
