#!/usr/bin/env perl
# Expected results from Perl's TAP::Parser (core Perl) for the vendored fixtures that are TAP 12/13
# documents (no `TAP version` line, or `TAP version 13`): writes expected/perl/<name>.json.
#
# Usage: perl perl_expected.pl            (from this directory; needs only core Perl >= 5.10)
# The verdict `ok` is what TAP::Harness decides: no problems (failed tests, parse errors) and no bail out.
#
# TAP::Parser knows no subtests: indented lines are unknown lines to it, so only the top level
# is compared. Fields: ok (the harness verdict: no failed tests, no parse errors), counts,
# plan, version, bail out, and per top-level test point number, ok, description (with Perl's
# leading "- " removed), directive and reason. `parse_errors` is kept for humans.
use strict;
use warnings;
use TAP::Parser;
use JSON::PP;
use File::Basename qw(basename);

my $json = JSON::PP->new->canonical(1)->pretty->utf8(0);
my ($written, $skipped) = (0, 0);
my @hangs;
for my $file (sort glob("fixtures/*.tap")) {
    open my $fh, '<:raw', $file or die "$file: $!";
    my $tap = do { local $/; <$fh> };
    close $fh;
    my ($v) = $tap =~ /^TAP version (\d+)\s*$/mi;
    if (defined $v && $v > 13) { $skipped++; next; }
    # An empty string is not a source to TAP::Parser; one empty line parses the same (no plan).
    my $p = TAP::Parser->new({ tap => length($tap) ? $tap : "\n" });
    my (@tests, $plan, $bail, $version);
    my $name = basename($file, '.tap');
    # TAP::Parser's YAMLish reader loops forever on a block that never closes at the end of
    # the input: such fixtures get no Perl expectation (listed in expected/perl/HANGS.txt).
    my $done = eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        local $SIG{__WARN__} = sub {};
        alarm 5;
        while (my $r = $p->next) {
        if ($r->is_test) {
            my $d = $r->description;
            $d =~ s/^\s*-\s+//; $d =~ s/^-$//;
            my $dir = $r->directive;
            push @tests, {
                number => $r->number + 0,
                ok => $r->is_actual_ok ? JSON::PP::true : JSON::PP::false,
                description => $d,
                directive => $dir ? { kind => lc $dir,
                                      reason => (length($r->explanation) ? $r->explanation : undef) } : undef,
            };
        } elsif ($r->is_plan && !$plan) {
            $plan = { end => $r->tests_planned + 0,
                      skip_all => ($r->directive eq 'SKIP' ? JSON::PP::true : JSON::PP::false),
                      reason => (length($r->explanation) ? $r->explanation : undef) };
        } elsif ($r->is_bailout && !defined $bail) {
            $bail = $r->explanation;
        } elsif ($r->is_version && !defined $version) {
            $version = $r->version + 0;
        }
        }
        alarm 0;
        1;
    };
    if (!$done) { alarm 0; push @hangs, "$name.tap"; next; }
    # TAP::Harness aborts the whole run on a bail out; TAP::Parser itself does not count it
    # among its problems.
    my $ok = !$p->has_problems && !defined $bail;
    my $out = {
        fixture => "$name.tap",
        source => "TAP::Parser $TAP::Parser::VERSION (perl $^V)",
        ok => $ok ? JSON::PP::true : JSON::PP::false,
        count => $p->tests_run + 0,
        pass => scalar($p->actual_passed) + 0,
        fail => scalar($p->actual_failed) + 0,
        todo => scalar($p->todo) + 0,
        skip => scalar($p->skipped) + 0,
        plan => $plan,
        skip_all => defined($p->skip_all) ? $p->skip_all : undef,
        version => $version,
        bailout => $bail,
        tests => \@tests,
        parse_errors => [ $p->parse_errors ],
    };
    open my $o, '>:utf8', "expected/perl/$name.json" or die $!;
    print $o $json->encode($out);
    close $o;
    $written++;
}
open my $h, '>', 'expected/perl/HANGS.txt' or die $!;
print $h map { "$_\n" } @hangs;
close $h;
print "$written expected results written to expected/perl ($skipped TAP 14 fixtures skipped)\n";
