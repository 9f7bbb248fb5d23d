// Package regions is the shared vocabulary of qx-regions: this region's name
// and every region's base URL ([Config]), read from QX_REGION__NAME and
// QX_REGION__URLS. It is the Go counterpart of the Python RegionConfig.
//
// The replicator lives in the replication, cdc and checkpoint packages; the
// tenant → region lookup in resolver; write routing in router.
package regions

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
)

// Environment variables read by [ConfigFromEnv].
const (
	EnvRegionName = "QX_REGION__NAME"
	EnvRegionURLs = "QX_REGION__URLS"
)

// ErrInvalidConfig is wrapped by every error of [ParseConfig].
var ErrInvalidConfig = errors.New("invalid region config")

// Config is this region's name and the base URL of every region.
type Config struct {
	// Name is this region's name, e.g. "eu-west-1".
	Name string
	// URLs maps each region's name to its base URL. It may be empty when
	// the service never redirects; when it is not, it holds Name too.
	URLs map[string]*url.URL
}

// ConfigFromEnv reads QX_REGION__NAME and QX_REGION__URLS.
func ConfigFromEnv() (Config, error) {
	return ParseConfig(os.Getenv(EnvRegionName), os.Getenv(EnvRegionURLs))
}

// ParseConfig validates a region name and a region URL list. urls is either
// a JSON object ({"eu-west-1":"https://eu.example.com"}) or
// "name=url,name=url"; it may be empty.
func ParseConfig(name, urls string) (Config, error) {
	if err := ValidateRegionName(name); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, EnvRegionName, err)
	}
	cfg := Config{Name: name, URLs: map[string]*url.URL{}}
	pairs, err := splitURLs(urls)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, EnvRegionURLs, err)
	}
	for _, p := range pairs {
		if err := ValidateRegionName(p[0]); err != nil {
			return Config{}, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, EnvRegionURLs, err)
		}
		if _, dup := cfg.URLs[p[0]]; dup {
			return Config{}, fmt.Errorf("%w: %s: region %q listed twice", ErrInvalidConfig, EnvRegionURLs, p[0])
		}
		u, err := ParseBaseURL(p[1])
		if err != nil {
			return Config{}, fmt.Errorf("%w: %s: region %q: %w", ErrInvalidConfig, EnvRegionURLs, p[0], err)
		}
		cfg.URLs[p[0]] = u
	}
	if len(cfg.URLs) > 0 {
		if _, ok := cfg.URLs[name]; !ok {
			return Config{}, fmt.Errorf("%w: %s: this region %q (%s) is not among the listed regions %s",
				ErrInvalidConfig, EnvRegionURLs, name, EnvRegionName, strings.Join(cfg.Regions(), ", "))
		}
	}
	return cfg, nil
}

// Regions returns the names of the configured regions, sorted.
func (c Config) Regions() []string {
	names := make([]string, 0, len(c.URLs))
	for n := range c.URLs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Has reports whether region is configured. With no URLs configured, only
// this region's own name is known.
func (c Config) Has(region string) bool {
	if len(c.URLs) == 0 {
		return region == c.Name
	}
	_, ok := c.URLs[region]
	return ok
}

// ValidateRegionName checks that name is 1-63 characters of [a-z0-9-].
func ValidateRegionName(name string) error {
	if name == "" {
		return errors.New("region name is empty")
	}
	if len(name) > 63 {
		return fmt.Errorf("region name %q is longer than 63 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("region name %q has %q: only lowercase a-z, 0-9 and - are allowed", name, r)
		}
	}
	return nil
}

// ParseBaseURL parses a region base URL: absolute http or https with a
// host, no userinfo, no query and no fragment.
func ParseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("url %q: scheme must be http or https", raw)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("url %q: no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("url %q: userinfo is not allowed", redactUserinfo(u))
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("url %q: query is not allowed", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, fmt.Errorf("url %q: fragment is not allowed", raw)
	case u.Opaque != "":
		return nil, fmt.Errorf("url %q: not a hierarchical URL", raw)
	}
	return u, nil
}

// redactUserinfo keeps a password in a rejected URL out of error messages.
func redactUserinfo(u *url.URL) string {
	c := *u
	c.User = url.User("xxxxx")
	return c.String()
}

// splitURLs turns either accepted form into name/url pairs, in input order.
func splitURLs(s string) ([][2]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if strings.HasPrefix(s, "{") {
		return splitJSON(s)
	}
	var pairs [][2]string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("empty entry in %q", s)
		}
		name, u, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("entry %q is not name=url", item)
		}
		pairs = append(pairs, [2]string{strings.TrimSpace(name), strings.TrimSpace(u)})
	}
	return pairs, nil
}

// splitJSON reads a JSON object token by token, so that a key listed twice
// is caught (encoding/json would keep the last one silently).
func splitJSON(s string) ([][2]string, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object of region name to URL")
	}
	var pairs [][2]string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("bad JSON: %w", err)
		}
		key, _ := tok.(string)
		var val any
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("bad JSON: %w", err)
		}
		str, ok := val.(string)
		if !ok {
			return nil, fmt.Errorf("region %q: URL must be a JSON string, got %v", key, val)
		}
		pairs = append(pairs, [2]string{key, str})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, fmt.Errorf("bad JSON: unterminated object")
	}
	if rest := strings.TrimSpace(s[dec.InputOffset():]); rest != "" {
		return nil, fmt.Errorf("bad JSON: trailing data %q after the object", rest)
	}
	return pairs, nil
}
