package regions

import (
	"errors"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	good := []struct {
		name, urls string
		want       map[string]string
	}{
		{"eu-west-1", "", map[string]string{}},
		{"eu-west-1", `{"eu-west-1":"https://eu.example.com","us-east-1":"https://us.example.com"}`,
			map[string]string{"eu-west-1": "https://eu.example.com", "us-east-1": "https://us.example.com"}},
		{"eu-west-1", "eu-west-1=https://eu.example.com, us-east-1=http://us.example.com:8080/api",
			map[string]string{"eu-west-1": "https://eu.example.com", "us-east-1": "http://us.example.com:8080/api"}},
		{"a", " {\"a\": \"http://127.0.0.1:1\"} ", map[string]string{"a": "http://127.0.0.1:1"}},
		{strings.Repeat("a", 63), strings.Repeat("a", 63) + "=https://x", map[string]string{strings.Repeat("a", 63): "https://x"}},
	}
	for _, tc := range good {
		cfg, err := ParseConfig(tc.name, tc.urls)
		if err != nil {
			t.Errorf("ParseConfig(%q, %q): %v", tc.name, tc.urls, err)
			continue
		}
		if cfg.Name != tc.name || len(cfg.URLs) != len(tc.want) {
			t.Errorf("ParseConfig(%q, %q) = %+v, want %v", tc.name, tc.urls, cfg, tc.want)
		}
		for k, v := range tc.want {
			if got := cfg.URLs[k]; got == nil || got.String() != v {
				t.Errorf("ParseConfig(%q, %q): URLs[%s] = %v, want %s", tc.name, tc.urls, k, got, v)
			}
		}
	}

	bad := []struct {
		name, urls string
		wantInErr  []string
	}{
		{"", "", []string{EnvRegionName, "empty"}},
		{"EU-west-1", "", []string{EnvRegionName, `"EU-west-1"`}},
		{"eu_west", "", []string{EnvRegionName, `"eu_west"`}},
		{"eu west", "", []string{EnvRegionName}},
		{strings.Repeat("a", 64), "", []string{EnvRegionName, "63"}},
		{"eu", "eu=ftp://eu.example.com", []string{EnvRegionURLs, "ftp://eu.example.com", "scheme"}},
		{"eu", "eu=/relative", []string{EnvRegionURLs, "/relative"}},
		{"eu", "eu=https://", []string{EnvRegionURLs, "no host"}},
		{"eu", "eu=https://u:secret@eu.example.com", []string{EnvRegionURLs, "userinfo"}},
		{"eu", "eu=https://eu.example.com?x=1", []string{EnvRegionURLs, "query"}},
		{"eu", "eu=https://eu.example.com/#top", []string{EnvRegionURLs, "fragment"}},
		{"eu", "eu=https://a,eu=https://b", []string{EnvRegionURLs, "twice", `"eu"`}},
		{"eu", `{"eu":"https://a","eu":"https://b"}`, []string{EnvRegionURLs, "twice"}},
		{"eu", "us=https://us.example.com", []string{EnvRegionURLs, `"eu"`, "not among"}},
		{"eu", "eu=https://a,,us=https://b", []string{EnvRegionURLs, "empty entry"}},
		{"eu", "eu", []string{EnvRegionURLs, "name=url"}},
		{"eu", `{"eu": 5}`, []string{EnvRegionURLs, "JSON string"}},
		{"eu", `{"eu": "https://a"`, []string{EnvRegionURLs, "JSON"}},
		{"eu", `{"eu": "https://a"} x`, []string{EnvRegionURLs, "trailing"}},
		{"eu", `{"EU": "https://a"}`, []string{EnvRegionURLs, `"EU"`}},
		{"eu", "=https://a", []string{EnvRegionURLs, "empty"}},
	}
	for _, tc := range bad {
		_, err := ParseConfig(tc.name, tc.urls)
		if err == nil {
			t.Errorf("ParseConfig(%q, %q): no error", tc.name, tc.urls)
			continue
		}
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseConfig(%q, %q): error %v does not wrap ErrInvalidConfig", tc.name, tc.urls, err)
		}
		for _, w := range tc.wantInErr {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseConfig(%q, %q): error %q does not name %q", tc.name, tc.urls, err, w)
			}
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks a password: %v", err)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(EnvRegionName, "us-east-1")
	t.Setenv(EnvRegionURLs, "us-east-1=https://us.example.com,eu-west-1=https://eu.example.com")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(cfg.Regions(), ","), "eu-west-1,us-east-1"; got != want {
		t.Fatalf("regions: got %s, want %s", got, want)
	}
	if !cfg.Has("eu-west-1") || cfg.Has("ap-south-1") {
		t.Fatalf("Has is wrong for %v", cfg.Regions())
	}
	t.Setenv(EnvRegionName, "")
	if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), EnvRegionName) {
		t.Fatalf("empty name: got %v, want an error naming %s", err, EnvRegionName)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("eu-west-1", `{"eu-west-1":"https://eu.example.com"}`)
	f.Add("eu-west-1", "eu-west-1=https://eu.example.com,us-east-1=http://us:80/x")
	f.Add("a", "a=http://[::1]:80")
	f.Add("a", "a=https://u@h")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, name, urls string) {
		cfg, err := ParseConfig(name, urls)
		if err != nil {
			return
		}
		// Whatever is accepted must re-validate from its own output.
		if err := ValidateRegionName(cfg.Name); err != nil {
			t.Fatalf("accepted name %q fails validation: %v", cfg.Name, err)
		}
		var parts []string
		for n, u := range cfg.URLs {
			if err := ValidateRegionName(n); err != nil {
				t.Fatalf("accepted region %q fails validation: %v", n, err)
			}
			if _, err := ParseBaseURL(u.String()); err != nil {
				t.Fatalf("accepted url %q fails re-validation: %v", u, err)
			}
			parts = append(parts, n+"="+u.String())
		}
		if len(cfg.URLs) > 0 && !cfg.Has(cfg.Name) {
			t.Fatalf("accepted config without its own region: %+v", cfg)
		}
		if len(parts) > 0 && !strings.ContainsAny(strings.Join(parts, ""), ",") {
			if _, err := ParseConfig(cfg.Name, strings.Join(parts, ",")); err != nil {
				t.Fatalf("re-parse of %q: %v", strings.Join(parts, ","), err)
			}
		}
	})
}
